import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as main from '../src/index.js';
import * as protocol from '../src/protocol/index.js';
import * as testing from '../src/testing/index.js';

// The runtime exports of each entry point, pinned so that an addition or a removal is a
// deliberate change of this list (and of the entry's doc comment), not a side effect.
const MAIN_EXPORTS = [
  'ARCHIVE_DEFAULTS',
  'ARCHIVE_RETRY_MAX_MS',
  'ARCHIVE_RETRY_MIN_MS',
  'COMMIT_LATENCY_BUCKETS',
  'DEFAULT_SEGMENT_SIZE',
  'DIAGNOSTICS_CHANNELS',
  'ERROR_CODES',
  'FORMAT_VERSION',
  'FileSystemArchive',
  'MAX_CHANNEL_BYTES',
  'MAX_REPLICATION_SLOTS_CAP',
  'MAX_RESTORE_POINT_NAME_BYTES',
  'MAX_SEGMENT_SIZE',
  'MEMORY_NETWORK_DEFAULTS',
  'MIN_SEGMENT_SIZE',
  'MemoryNetwork',
  'MemoryStorage',
  'MemoryTransport',
  'NODE_STORAGE_DEFAULTS',
  'NodeStorage',
  'PRIMARY_DEFAULTS',
  'PROMETHEUS_CONTENT_TYPE',
  'PROMOTE_SIGNAL_FILE',
  'Primary',
  'RECORD_HEADER_SIZE',
  'RETENTION_DEFAULTS',
  'SCRAM_DEFAULT_ITERATIONS',
  'SCRAM_MAX_ITERATIONS',
  'SCRAM_MIN_ITERATIONS',
  'SEGMENT_HEADER_SIZE',
  'SLOT_DEFAULTS',
  'STANDBY_DEFAULTS',
  'SlotManager',
  'Standby',
  'SyncStandbyNamesError',
  'TCP_TLS_DEFAULTS',
  'TCP_TRANSPORT_DEFAULTS',
  'TcpTransport',
  'WAL_LOG_DEFAULTS',
  'WalCorruptError',
  'WalLog',
  'WalshipError',
  'assertSlotName',
  'authOptionsSchema',
  'checksumImplementation',
  'decideRetention',
  'formatLsn',
  'formatPrometheus',
  'formatSynchronousStandbyNames',
  'formatTcpAddress',
  'isArchiver',
  'isLsn',
  'isStorage',
  'isWalshipError',
  'memoryNetworkOptionsSchema',
  'memoryTransportOptionsSchema',
  'nodeStorageOptionsSchema',
  'parseLsn',
  'parseSegmentFileName',
  'parseSynchronousStandbyNames',
  'parseTcpAddress',
  'primaryOptionsSchema',
  'promoteOptionsSchema',
  'rebuildControlFile',
  'rebuildControlFileOptionsSchema',
  'reconfigureOptionsSchema',
  'releasePositions',
  'scramVerifier',
  'segmentFileName',
  'slotAvailability',
  'standbyOptionsSchema',
  'syncPriorityOf',
  'syncStandbys',
  'syncStates',
  'tcpTransportOptionsSchema',
  'walLogOptionsSchema',
];

const PROTOCOL_EXPORTS = [
  'CompiledAuth',
  'FRAME_HEADER_BYTES',
  'FRAME_READER_DEFAULTS',
  'FrameReader',
  'MESSAGE_TYPES',
  'MessageStream',
  'PROTOCOL_LIMITS',
  'PROTOCOL_VERSION',
  'ReplicationServer',
  'ScramClient',
  'ScramServer',
  'baseBackupChunk',
  'checkChunk',
  'compileAuth',
  'connectReplication',
  'createReplicationSlot',
  'decodeMessage',
  'dropReplicationSlot',
  'encodeMessage',
  'encodeMessageParts',
  'frameReaderOptionsSchema',
  'parseScramVerifier',
];

/** Imports a module through the package's own name, so through package.json "exports". */
async function importByName(specifier: string): Promise<Record<string, unknown>> {
  return (await import(specifier)) as Record<string, unknown>;
}

describe('entry points', () => {
  it('walship exports exactly the reviewed list of runtime values', () => {
    assert.deepEqual(Object.keys(main).sort(), MAIN_EXPORTS, 'the runtime exports of src/index.ts');
  });

  it('walship/protocol exports exactly the wire-protocol list, none of it also in walship', () => {
    assert.deepEqual(Object.keys(protocol).sort(), PROTOCOL_EXPORTS, 'the runtime exports of src/protocol/index.ts');
    const both = PROTOCOL_EXPORTS.filter((name) => MAIN_EXPORTS.includes(name));
    assert.deepEqual(both, [], 'a value is exported by one of the two entries');
  });

  it('package.json maps walship, walship/protocol and walship/testing to these modules', async () => {
    // run-tests.mjs sets the `walship-source` condition, under which the names resolve to src/.
    assert.equal(await importByName('walship'), main, 'walship');
    assert.equal(await importByName('walship/protocol'), protocol, 'walship/protocol');
    assert.equal(await importByName('walship/testing'), testing, 'walship/testing');
  });
});
