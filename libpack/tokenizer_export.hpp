// Export of a checkpoint's tokenizer: vocab.bin (what each id prints) and tokenizer.bin
// (everything encoding, decoding and chat formatting need). Both written atomically.
#pragma once

#include <optional>
#include <string>

#include "tokenizer_format.hpp"

namespace moepack {

// Reads `checkpoint_dir`/tokenizer.json (+ tokenizer_config.json) and writes `out_path`.
// Return what was written, for summaries.
DecodeTable export_vocab(const std::string& checkpoint_dir, const std::string& out_path);
// `chat_format`, when given, replaces the family detected from the chat template (for
// checkpoints that ship no template or a template of a known family in another spelling).
TokenizerData export_tokenizer(const std::string& checkpoint_dir, const std::string& out_path,
                               std::optional<ChatFormat> chat_format = std::nullopt);

}  // namespace moepack
