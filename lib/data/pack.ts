// Padding-free packing: a batch's examples laid end to end in one row, with the offsets of each
// example (cuSeqlens, the varlen layout: example e at positions [cu[e], cu[e + 1])). The native
// forward restarts positions at each example and never attends across one, and the loss is
// summed per example, so a packed batch gives every example the loss and gradient it has in the
// padded batch, without computing on padding (Hugging Face's DataCollatorWithFlattening).
import { IGNORE_INDEX } from './encode';
import type { Batch } from './sampler';

/**
 * The batch packed: one row holding each row's tokens (its padding dropped: rows are right-padded),
 * `cuSeqlens` their offsets, and each example's first label set to -100 (it would be predicted from
 * the example before; a row's first label never counts either). `tasks`, `indices` and `lossTokens`
 * stay those of the examples, in order.
 */
export function packBatch<B extends Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>>(b: B): B & { cuSeqlens: number[] } {
  const ids: number[] = [], labels: number[] = [], cu = [0];
  b.inputIds.forEach((row, i) => {
    const mask = b.attentionMask[i];
    let n = mask.length;
    while (n > 0 && mask[n - 1] === 0) n--;
    if (mask.slice(0, n).includes(0)) throw new RangeError(`packBatch: row ${i} has padding before its last token; packing takes right-padded rows`);
    if (n === 0) throw new RangeError(`packBatch: row ${i} holds no token`);
    for (let t = 0; t < n; t++) {
      ids.push(row[t]);
      labels.push(t === 0 ? IGNORE_INDEX : b.labels[i][t]);
    }
    cu.push(ids.length);
  });
  return { ...b, inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [labels], cuSeqlens: cu };
}
