#pragma once
// The sections of a 64-bit little-endian ELF image (a CUBIN), by name: what the compile
// tests compare between two builds of one kernel.

#include <elf.h>

#include <cstring>
#include <map>
#include <string>

namespace convjit::testing {

// Name -> bytes for every section with contents; empty when `image` is no 64-bit ELF.
inline std::map<std::string, std::string> elf_sections(const std::string& image) {
  std::map<std::string, std::string> out;
  if (image.size() < sizeof(Elf64_Ehdr) ||
      image.compare(0, 4,
                    "\x7f"
                    "ELF") != 0 ||
      image[EI_CLASS] != ELFCLASS64) {
    return out;
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  const auto header = [&](unsigned i) {
    Elf64_Shdr sh{};
    const std::size_t at = eh.e_shoff + std::size_t{i} * eh.e_shentsize;
    if (at + sizeof(sh) <= image.size()) std::memcpy(&sh, image.data() + at, sizeof(sh));
    return sh;
  };
  if (eh.e_shstrndx >= eh.e_shnum) return out;
  const Elf64_Shdr names = header(eh.e_shstrndx);
  for (unsigned i = 1; i < eh.e_shnum; ++i) {
    const Elf64_Shdr sh = header(i);
    if (names.sh_offset + sh.sh_name >= image.size()) continue;
    const std::string name(image.c_str() + names.sh_offset + sh.sh_name);
    const bool contents = sh.sh_type != SHT_NOBITS && sh.sh_offset + sh.sh_size <= image.size();
    out[name] = contents ? image.substr(sh.sh_offset, sh.sh_size) : std::string();
  }
  return out;
}

}  // namespace convjit::testing
