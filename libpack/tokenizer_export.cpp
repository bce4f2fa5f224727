// vocab.bin / tokenizer.bin export from a Hugging Face checkpoint directory.
#include "tokenizer_export.hpp"

#include "atomic_file.hpp"
#include "tokenizer_file.hpp"
#include "tokenizer_json.hpp"

namespace moepack {
namespace {

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
    AtomicFile out(path);
    out.write(bytes);
    out.commit();
}

}  // namespace

DecodeTable export_vocab(const std::string& checkpoint_dir, const std::string& out_path) {
    TokenizerData data = read_hf_tokenizer(checkpoint_dir);
    write_file(out_path, serialize_vocab_file(data.decode));
    return std::move(data.decode);
}

TokenizerData export_tokenizer(const std::string& checkpoint_dir, const std::string& out_path,
                               std::optional<ChatFormat> chat_format) {
    TokenizerData data = read_hf_tokenizer(checkpoint_dir);
    if (chat_format) data.chat_format = *chat_format;
    write_file(out_path, serialize_tokenizer_file(data));
    return data;
}

}  // namespace moepack
