// File-system calls the library needs and Node lacks.
#pragma once

#include <string>

namespace rlora {

// Swaps two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE): a reader
// sees either the old or the new entry under each name, never neither. Returns 0, or the errno
// (ENOSYS or EINVAL where the system or file system cannot, e.g. an older kernel).
int exchange_paths(const std::string& a, const std::string& b);

}  // namespace rlora
