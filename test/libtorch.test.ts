// Prebuild tags and what each tells a person to install: Debian 12's libtorch 1.13, Debian 13's
// libtorch 2.6 (CPU and the CUDA build in contrib), and PyTorch's own builds.
import { describeTag, installHint, makeTag, tagOfFile, TAG_PATTERN } from '../lib/libtorch';

describe('libtorch tags', () => {
  it('names the version, compute flavour and linkage, and reads them back from a file name', () => {
    expect(makeTag(2, 6, 'cu124', 'deb')).toBe('torch2_6-cu124-deb');
    expect(TAG_PATTERN.test('torch2_6-cpu-deb')).toBe(true);
    expect(tagOfFile('prebuilds/linux-x64/rlora.glibc.torch2_6-cu124-deb.node')).toBe('torch2_6-cu124-deb');
    expect(tagOfFile('rlora.glibc.node')).toBeNull();
    expect(describeTag('torch1_13-cpu-deb')).toBe('libtorch 1.13, CPU, Debian/Ubuntu packages');
    expect(describeTag('torch2_6-cu124-deb')).toBe('libtorch 2.6, CUDA 12.4, Debian/Ubuntu packages');
    expect(describeTag('torch2_5-cu121-precxx11')).toBe("libtorch 2.5, CUDA 12.1, PyTorch's build, pre-C++11 ABI");
  });

  it('says which Debian package brings each Debian libtorch, and which pip wheel the others', () => {
    expect(installHint('torch1_13-cpu-deb')).toBe('sudo apt-get install -y libtorch1.13 libopenblas0-pthread   (Debian 12; or python3-torch, which brings it)');
    expect(installHint('torch2_6-cpu-deb')).toBe('sudo apt-get install -y libtorch2.6 libopenblas0-pthread   (Debian 13; or python3-torch, which brings it)');
    expect(installHint('torch2_6-cu124-deb')).toBe('sudo apt-get install -y libtorch-cuda-2.6   (Debian 13, contrib; or python3-torch-cuda)');
    expect(installHint('torch2_5-cu121-precxx11')).toBe('pip install "torch==2.5.*" --index-url https://download.pytorch.org/whl/cu121');
  });
});
