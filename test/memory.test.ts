// The CPU caching allocator: freed large blocks are reused, sizes are rounded to classes, limits
// and switching it off work, and results do not depend on it.
import { buildInfo, emptyCache, memoryStats, MultiHeadLoraLinear, resetPeakMemory, setCpuCacheLimit, setCpuCaching, Tensor } from '../lib';
import { randn } from './helpers/math';

/** The size class of a request, written here from its definition: 1, 1.25, 1.5 or 1.75 x 2^k, whole pages. */
function sizeClass(n: number): number {
  const p = 2 ** Math.floor(Math.log2(n));
  const q = p / 4;
  return Math.ceil(Math.ceil(n / q) * q / 4096) * 4096;
}

describe('CPU caching allocator', () => {
  afterEach(() => {
    setCpuCaching(true);
    setCpuCacheLimit(2 ** 40);
  });

  it('is on by default and counts live large blocks by size class', () => {
    expect(memoryStats().cpuCaching).toBe(true);
    const before = memoryStats().allocatedBytes;
    const held = Tensor.from(new Float32Array(300_000), [300_000]); // 1.2 MB
    expect(memoryStats().allocatedBytes - before).toBe(sizeClass(1_200_000));
    expect(sizeClass(1_200_000)).toBe(1_310_720);
    expect(held.numel).toBe(300_000);
  });

  it('reuses freed blocks: a second identical job takes its scratch buffers from the cache', async () => {
    const W = Tensor.from(Float32Array.from(randn(512 * 512, 1)), [512, 512]);
    // input dropout frees an in-wide scratch buffer in forward and one in backward
    const layer = new MultiHeadLoraLinear({ weight: W }, { rank: 8, heads: 4, seed: 1, dropoutOn: 'input' });
    const x = Tensor.from(Float32Array.from(randn(2048 * 512, 2)), [2048, 512]);
    const g = Tensor.from(Float32Array.from(randn(2048 * 512, 3)), [2048, 512]);
    const first = await layer.vjp(x, g);
    const s1 = memoryStats();
    const second = await layer.vjp(x, g);
    const s2 = memoryStats();
    expect(s1.cachedBytes + s1.allocatedBytes).toBeGreaterThan(4 * 2048 * 512);
    // the first job's output and gradInput are still held: the second job's must be new blocks
    expect(s2.cacheMisses - s1.cacheMisses).toBeLessThanOrEqual(3);
    expect(s2.cacheHits - s1.cacheHits).toBeGreaterThanOrEqual(2);
    expect(first.output.shape).toEqual(second.output.shape);
    emptyCache();
    expect(memoryStats().cachedBytes).toBe(0);
  });

  it('keeps nothing over its limit', async () => {
    setCpuCacheLimit(0);
    const layer = new MultiHeadLoraLinear({ weight: Tensor.from(new Float32Array(512 * 512).fill(0.01), [512, 512]) }, { rank: 4 });
    await layer.forward(Tensor.from(new Float32Array(1024 * 512).fill(1), [1024, 512]));
    expect(memoryStats().cachedBytes).toBe(0);
  });

  it('gives the same results with the cache switched off', async () => {
    const W = Tensor.from(Float32Array.from(randn(256 * 384, 4)), [256, 384]);
    const x = Tensor.from(Float32Array.from(randn(1500 * 384, 5)), [1500, 384]);
    const run = async (): Promise<Float32Array> => {
      const l = new MultiHeadLoraLinear({ weight: W }, { rank: 8, heads: 3, seed: 9 });
      return (await l.forward(x)).data() as Float32Array; // training mode: dropout masks from the seed
    };
    const cached = await run();
    setCpuCaching(false);
    expect(memoryStats().cpuCaching).toBe(false);
    const plain = await run();
    expect(Buffer.from(plain.buffer).equals(Buffer.from(cached.buffer))).toBe(true);
  });
});

describe('CUDA allocator counters', () => {
  it('are read only in builds against a libtorch with CUDA; a CPU-only build reports none', () => {
    const s = memoryStats();
    expect(typeof s.cudaMemoryStats).toBe('boolean');
    if (!s.cudaMemoryStats) expect(s.cuda).toEqual([]);
    // no CUDA tensor was made in this process: the allocator has set up no device
    if (!buildInfo.cudaAvailable) expect(s.cuda).toEqual([]);
    resetPeakMemory();
    emptyCache(); // reaches the CUDA allocator too where there is one; here a no-op on it
    expect(memoryStats().cuda).toEqual(s.cuda);
  });
});
