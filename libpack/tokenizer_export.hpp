// Export of a checkpoint's tokenizer: vocab.bin (what each id prints) and tokenizer.bin
// (everything encoding, decoding and chat formatting need). Both written atomically.
#pragma once

#include <string>

#include "tokenizer_format.hpp"

namespace moepack {

// Reads `checkpoint_dir`/tokenizer.json (+ tokenizer_config.json) and writes `out_path`.
// Return what was written, for summaries.
DecodeTable export_vocab(const std::string& checkpoint_dir, const std::string& out_path);
TokenizerData export_tokenizer(const std::string& checkpoint_dir, const std::string& out_path);

}  // namespace moepack
