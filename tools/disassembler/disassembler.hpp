#pragma once
// SASS from a CUBIN through the CUDA toolkit's own disassemblers, which convjit
// neither links nor ships: they are looked up at run time. Shared by the convjit
// command (inspect --sass) and the Python package (KernelInfo.sass()), so that both
// find the same tool the same way.

#include <filesystem>
#include <optional>
#include <string>

namespace convjit::disasm {

struct Disassembler {
  std::filesystem::path program;  // nvdisasm or cuobjdump
  bool is_cuobjdump = false;
};

// nvdisasm, else cuobjdump, on PATH, in $CUDA_HOME/bin, $CUDA_PATH/bin or /usr/local/cuda/bin.
std::optional<Disassembler> find_disassembler();
// Where find_disassembler looked, for the error when it found nothing.
std::string disassembler_search_path();

// Writes the CUBIN to a temporary file and runs the disassembler with its output going
// straight to our stdout. Returns the tool's exit status; throws Error(kIo) when it
// cannot be started.
int print_sass(const Disassembler& tool, const std::string& cubin);

// The same run with the SASS returned instead of printed. Throws Error(kIo) when the
// tool cannot be started or exits with an error (the message carries its stderr).
std::string sass(const Disassembler& tool, const std::string& cubin);

}  // namespace convjit::disasm
