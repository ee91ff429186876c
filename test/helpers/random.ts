/** The seeded generator that walship/testing ships, under the name these tests use. */
export { seededRandom as mulberry32 } from '../../src/testing/seeded-random.js';
