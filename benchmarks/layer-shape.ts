// The shape the layer benchmark measures (issue: in = out = 2048, 4096 tokens, r = 8, N = 5, p = 0.1).
export const SHAPE = { inF: 2048, outF: 2048, tokens: 4096, rank: 8, heads: 5, dropout: 0.1, alpha: 16 };
