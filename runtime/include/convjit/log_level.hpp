#pragma once
// How much the runtime says on stderr (RuntimeOptions::log_level, CONVJIT_LOG_LEVEL).

namespace convjit {

enum class LogLevel { kError, kWarn, kInfo, kDebug };

}  // namespace convjit
