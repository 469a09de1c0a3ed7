// Durable file writes: fsync a file or directory by path (a rename is durable only once its
// directory is synced), and errno as text for error messages.
#pragma once

#include <string>

namespace braid {

std::string errno_text();

// Opens `path` (as a directory when `directory`), fsyncs and closes it; raises braid::Error naming it.
void fsync_path(const std::string& path, bool directory = false);

}  // namespace braid
