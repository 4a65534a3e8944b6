// Run by test/atomic-save.test.ts in a process of its own, to be killed with SIGKILL at a random
// moment: saves two different models (or two different adapters) into the same folder, one after
// the other, forever. Prints "ready" once the first save is complete.
import { Adapter, Model } from '../../lib';
import { SAVE_CONFIG } from './tiny-model';

const [dir, kind] = process.argv.slice(2);

if (kind === 'model') {
  const models = [Model.fromConfig(SAVE_CONFIG, { seed: 1 }), Model.fromConfig(SAVE_CONFIG, { seed: 2 })];
  models[0].save(dir, { maxShardSize: 20_000 });
  console.log('ready');
  for (let i = 1; ; i++) models[i % 2].save(dir, { maxShardSize: 20_000 });
} else {
  const adapters = [
    Adapter.attach(Model.fromConfig(SAVE_CONFIG, { seed: 1 }), { method: 'rlora', rank: 4, heads: 3, targetModules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], seed: 1 }),
    Adapter.attach(Model.fromConfig(SAVE_CONFIG, { seed: 1 }), { method: 'lora', rank: 8, targetModules: ['gate_proj'], seed: 2 }),
  ];
  adapters[0].save(dir);
  console.log('ready');
  for (let i = 1; ; i++) adapters[i % 2].save(dir);
}
