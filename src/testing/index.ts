/**
 * walship's public test kit: simulated storage that can lose power and fail on demand, an
 * in-process network with faults, and a cluster fixture that opens primaries and standbys
 * with test defaults and closes them after each test, for durability tests of walship itself
 * and of the applications built on it.
 * @packageDocumentation
 */
export { MemoryStorage } from '../storage/memory-storage.js';
export type {
  CrashOptions,
  MemoryStorageFault,
  MemoryStorageFaultOperation,
  MemoryStorageOptions,
  UnsyncedMetadataMode,
  UnsyncedWritesMode,
} from '../storage/memory-storage.js';
export { MemoryNetwork, MemoryTransport } from '../transport/memory-transport.js';
export { TRANSPORT_CONFORMANCE_DEFAULTS, transportConformance } from './transport-conformance.js';
export type { TransportCapabilities, TransportConformanceHarness } from './transport-conformance.js';
export type { ConformanceAdapters, ConformanceIt, ConformanceTestFn } from './conformance-runner.js';
export { ARCHIVER_CONFORMANCE_DEFAULTS, archiverConformance } from './archiver-conformance.js';
export type { ArchiverCapabilities, ArchiverConformanceHarness } from './archiver-conformance.js';
export { STORAGE_CONFORMANCE_DEFAULTS, storageConformance } from './storage-conformance.js';
export type { StorageCapabilities, StorageConformanceHarness } from './storage-conformance.js';
export { MemoryArchive } from './memory-archive.js';
export type { MemoryArchiveFault, MemoryArchiveOperation, MemoryArchiveOptions } from './memory-archive.js';
export { seededRandom } from './seeded-random.js';
export { CLUSTER_DEFAULTS, createCluster } from './cluster.js';
export type { Cluster, ClusterListen, ClusterOptions, ClusterPrimaryOptions, ClusterStandbyOptions, TeardownContext } from './cluster.js';
export { VirtualScheduler } from './virtual-scheduler.js';
export type { VirtualSchedulerOptions } from './virtual-scheduler.js';
export type { Scheduler, SchedulerTimer, SleepOptions } from '../scheduler.js';
export { SimulatedCluster } from './simulation/simulated-cluster.js';
export type { CheckResult, SimulationOptions } from './simulation/simulated-cluster.js';
export { SCENARIO_FAULTS, runScenario } from './simulation/scenario.js';
export type { ScenarioFault, ScenarioOptions, ScenarioResult } from './simulation/scenario.js';
export { KvApplication, kvEntry } from './simulation/kv-application.js';
export type { KvWrite } from './simulation/kv-application.js';
export { RecordingApplication, batchDigest } from './simulation/recording-application.js';
export type { AppliedBatch } from './simulation/recording-application.js';
export { formatStep } from './simulation/history.js';
export type { CatchupMode, CommitOutcome, CommitRecord, DiskFaultKind, SimulationStep, Violation } from './simulation/history.js';
