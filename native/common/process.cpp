#include "common/process.h"

#include <cerrno>

#ifdef __linux__
#include <sys/prctl.h>
#include <unistd.h>
#endif

namespace rlora {

int set_parent_death_signal(int signal, int parent_pid) {
#ifdef __linux__
  if (prctl(PR_SET_PDEATHSIG, signal) != 0) return errno;
  // the launcher may have died between our start and the call above: then we were reparented
  if (parent_pid > 0 && getppid() != parent_pid) return ESRCH;
  return 0;
#else
  (void)signal;
  (void)parent_pid;
  return ENOSYS;
#endif
}

}  // namespace rlora
