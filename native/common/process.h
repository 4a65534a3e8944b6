// Process calls the library needs and Node lacks.
#pragma once

namespace rlora {

// Asks the kernel to send `signal` to this process when its parent dies (Linux prctl
// PR_SET_PDEATHSIG), then checks that the parent `parent_pid` is still the parent: a worker whose
// launcher died before the call learns it here. Returns 0 when set and the parent lives, ESRCH
// when the parent is already gone, or the errno (ENOSYS where the system has no such call).
int set_parent_death_signal(int signal, int parent_pid);

}  // namespace rlora
