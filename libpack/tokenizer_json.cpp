// Hugging Face tokenizer.json -> TokenizerData: model, merges, added tokens, normaliser,
// pre-tokenizer, post-processor, decoder, special ids and chat template.
#include "tokenizer_json.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "byte_level_alphabet.hpp"
#include "chat_template_family.hpp"
#include "checkpoint.hpp"
#include "error.hpp"

namespace moepack {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint32_t kMaxId = (1u << 24) - 1;
// What the ByteLevel pre-tokenizer splits with when its use_regex is set.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Source {
    std::string path;
    const json& at(const json& obj, const char* key, const std::string& where) const {
        if (!obj.is_object() || !obj.contains(key)) fail(path, ": ", where, ": missing \"", key, "\"");
        return obj[key];
    }
    std::string string_at(const json& obj, const char* key, const std::string& where) const {
        const json& v = at(obj, key, where);
        if (!v.is_string()) fail(path, ": ", where, ": \"", key, "\" must be a string, got ", v.type_name());
        return v.get<std::string>();
    }
    bool bool_or(const json& obj, const char* key, bool fallback, const std::string& where) const {
        if (!obj.contains(key) || obj[key].is_null()) return fallback;
        if (!obj[key].is_boolean()) fail(path, ": ", where, ": \"", key, "\" must be true or false");
        return obj[key].get<bool>();
    }
    uint32_t id_of(const json& v, const std::string& where) const {
        if (!v.is_number_unsigned() || v.get<uint64_t>() > kMaxId)
            fail(path, ": ", where, ": id ", v.dump(), " is not an integer in [0, ", kMaxId, "]");
        return static_cast<uint32_t>(v.get<uint64_t>());
    }
    [[noreturn]] void unsupported(const std::string& component, const std::string& type) const {
        fail(path, ": ", component, " of type '", type, "' is not supported");
    }
};

std::string type_of(const Source& s, const json& obj, const std::string& where) {
    return s.string_at(obj, "type", where);
}

// ---- pieces of tokenizer.json ----

void read_normalizer(const Source& s, const json& n, std::vector<NormalizerStep>& out) {
    if (n.is_null()) return;
    const std::string type = type_of(s, n, "normalizer");
    if (type == "Sequence") {
        const json& list = s.at(n, "normalizers", "normalizer");
        if (!list.is_array()) fail(s.path, ": normalizer: \"normalizers\" must be an array");
        for (const auto& step : list) read_normalizer(s, step, out);
    } else if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD") {
        const NormalizerKind k = type == "NFC"    ? NormalizerKind::nfc
                                 : type == "NFKC" ? NormalizerKind::nfkc
                                 : type == "NFD"  ? NormalizerKind::nfd
                                                  : NormalizerKind::nfkd;
        out.push_back({k, "", ""});
    } else if (type == "Prepend") {
        out.push_back({NormalizerKind::prepend, s.string_at(n, "prepend", "Prepend normalizer"), ""});
    } else if (type == "Replace") {
        const json& pattern = s.at(n, "pattern", "Replace normalizer");
        if (!pattern.is_object() || !pattern.contains("String"))
            fail(s.path, ": Replace normalizer: only a \"String\" pattern is supported, got ", pattern.dump());
        const std::string from = s.string_at(pattern, "String", "Replace normalizer pattern");
        if (from.empty()) fail(s.path, ": Replace normalizer: empty pattern");
        out.push_back({NormalizerKind::replace, from, s.string_at(n, "content", "Replace normalizer")});
    } else {
        s.unsupported("normalizer", type);
    }
}

void read_pre_tokenizer(const Source& s, const json& p, std::vector<PreTokenizerStep>& out) {
    if (p.is_null()) return;
    const std::string type = type_of(s, p, "pre_tokenizer");
    if (!out.empty() && out.back().kind == PreTokenizerKind::byte_level)
        fail(s.path, ": pre_tokenizer: '", type, "' after ByteLevel is not supported");
    if (type == "Sequence") {
        const json& list = s.at(p, "pretokenizers", "pre_tokenizer");
        if (!list.is_array()) fail(s.path, ": pre_tokenizer: \"pretokenizers\" must be an array");
        for (const auto& step : list) read_pre_tokenizer(s, step, out);
    } else if (type == "Split") {
        const std::string behavior = s.string_at(p, "behavior", "Split pre-tokenizer");
        if (behavior != "Isolated")
            fail(s.path, ": Split pre-tokenizer: behavior '", behavior, "' is not supported (only Isolated)");
        if (s.bool_or(p, "invert", false, "Split pre-tokenizer"))
            fail(s.path, ": Split pre-tokenizer: invert is not supported");
        const json& pattern = s.at(p, "pattern", "Split pre-tokenizer");
        std::string regex;
        if (pattern.is_object() && pattern.contains("Regex")) {
            regex = s.string_at(pattern, "Regex", "Split pattern");
        } else if (pattern.is_object() && pattern.contains("String")) {
            const std::string literal = s.string_at(pattern, "String", "Split pattern");
            if (literal.find("\\E") != std::string::npos)
                fail(s.path, ": Split pre-tokenizer: string pattern containing \\E is not supported");
            regex = "\\Q" + literal + "\\E";
        } else {
            fail(s.path, ": Split pre-tokenizer: pattern must be {\"Regex\": ...} or {\"String\": ...}");
        }
        if (regex.empty()) fail(s.path, ": Split pre-tokenizer: empty pattern");
        out.push_back({PreTokenizerKind::split_isolated, regex, false});
    } else if (type == "ByteLevel") {
        const bool use_regex = s.bool_or(p, "use_regex", true, "ByteLevel pre-tokenizer");
        out.push_back({PreTokenizerKind::byte_level, use_regex ? kGpt2Pattern : "",
                       s.bool_or(p, "add_prefix_space", true, "ByteLevel pre-tokenizer")});
    } else {
        s.unsupported("pre_tokenizer", type);
    }
}

// Ids of the special tokens a TemplateProcessing post-processor puts around a single text.
void read_post_processor(const Source& s, const json& p, TokenizerData& d) {
    if (p.is_null()) return;
    const std::string type = type_of(s, p, "post_processor");
    if (type == "ByteLevel") return;  // offsets only
    if (type == "Sequence") {
        const json& list = s.at(p, "processors", "post_processor");
        if (!list.is_array()) fail(s.path, ": post_processor: \"processors\" must be an array");
        for (const auto& step : list) read_post_processor(s, step, d);
        return;
    }
    if (type != "TemplateProcessing") s.unsupported("post_processor", type);
    const json& single = s.at(p, "single", "TemplateProcessing");
    const json& specials = s.at(p, "special_tokens", "TemplateProcessing");
    if (!single.is_array()) fail(s.path, ": TemplateProcessing: \"single\" must be an array");
    bool after_sequence = false;
    for (const auto& piece : single) {
        if (piece.is_object() && piece.contains("Sequence")) {
            if (after_sequence) fail(s.path, ": TemplateProcessing: \"single\" holds two sequences");
            after_sequence = true;
            continue;
        }
        if (!piece.is_object() || !piece.contains("SpecialToken"))
            fail(s.path, ": TemplateProcessing: unexpected piece ", piece.dump());
        const std::string name = s.string_at(piece["SpecialToken"], "id", "TemplateProcessing special token");
        const json& entry = s.at(specials, name.c_str(), "TemplateProcessing special_tokens");
        const json& ids = s.at(entry, "ids", "TemplateProcessing special token '" + name + "'");
        if (!ids.is_array()) fail(s.path, ": TemplateProcessing: ids of '", name, "' must be an array");
        for (const auto& id : ids)
            (after_sequence ? d.suffix_ids : d.prefix_ids).push_back(s.id_of(id, "special token '" + name + "'"));
    }
}

struct DecoderChain {
    DecoderKind kind = DecoderKind::byte_level;
    std::vector<std::pair<std::string, std::string>> replacements;
    uint32_t strip = 0;
};

DecoderChain read_decoder(const Source& s, const json& d) {
    if (d.is_null()) fail(s.path, ": a tokenizer without a decoder is not supported");
    DecoderChain chain;
    const std::string type = type_of(s, d, "decoder");
    if (type == "ByteLevel") return chain;
    if (type != "Sequence") s.unsupported("decoder", type);
    const json& list = s.at(d, "decoders", "decoder");
    if (!list.is_array()) fail(s.path, ": decoder: \"decoders\" must be an array");
    // Accepted shape: Replace*, ByteFallback, Fuse, Strip? (the SentencePiece BPE chain).
    enum Stage { replace, fallback, fuse, strip, done } stage = replace;
    for (const auto& step : list) {
        const std::string t = type_of(s, step, "decoder step");
        if (t == "Replace" && stage == replace) {
            const json& pattern = s.at(step, "pattern", "Replace decoder");
            if (!pattern.is_object() || !pattern.contains("String"))
                fail(s.path, ": Replace decoder: only a \"String\" pattern is supported");
            const std::string from = s.string_at(pattern, "String", "Replace decoder pattern");
            if (from.empty()) fail(s.path, ": Replace decoder: empty pattern");
            chain.replacements.emplace_back(from, s.string_at(step, "content", "Replace decoder"));
        } else if (t == "ByteFallback" && stage == replace) {
            stage = fuse;
        } else if (t == "Fuse" && stage == fuse) {
            stage = strip;
        } else if (t == "Strip" && stage == strip) {
            if (s.string_at(step, "content", "Strip decoder") != " ")
                fail(s.path, ": Strip decoder: only stripping spaces is supported");
            const json& start = s.at(step, "start", "Strip decoder");
            const json& stop = s.at(step, "stop", "Strip decoder");
            if (!start.is_number_unsigned() || start.get<uint64_t>() > 16 || !stop.is_number_unsigned() ||
                stop.get<uint64_t>() != 0)
                fail(s.path, ": Strip decoder: start must be 0..16 and stop 0");
            chain.strip = static_cast<uint32_t>(start.get<uint64_t>());
            stage = done;
        } else {
            fail(s.path, ": decoder step '", t, "' is not supported here (supported chain: Replace, ByteFallback, "
                 "Fuse, Strip)");
        }
    }
    if (stage != strip && stage != done)
        fail(s.path, ": decoder sequence must contain ByteFallback followed by Fuse");
    chain.kind = DecoderKind::byte_fallback;
    return chain;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size())
        text.replace(pos, from.size(), to);
    return text;
}

bool is_byte_token(const std::string& t) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
    return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// What one token prints, by the per-token part of the decoder chain.
DecodeEntry decode_entry(const DecoderChain& chain, const std::string& text, TokenKind kind) {
    if (chain.kind == DecoderKind::byte_level) {
        auto bytes = byte_level_to_bytes(text);
        return {kind, bytes ? *bytes : text};
    }
    std::string out = text;
    for (const auto& [from, to] : chain.replacements) out = replace_all(out, from, to);
    if (kind == TokenKind::normal && is_byte_token(out))
        return {TokenKind::byte, std::string(1, static_cast<char>(std::stoi(out.substr(3, 2), nullptr, 16)))};
    return {kind, out};
}

std::pair<std::string, std::string> split_merge(const Source& s, const json& m, size_t rank) {
    const std::string where = concat("merge #", rank);
    if (m.is_array()) {
        if (m.size() != 2 || !m[0].is_string() || !m[1].is_string())
            fail(s.path, ": ", where, ": expected two strings, got ", m.dump());
        return {m[0].get<std::string>(), m[1].get<std::string>()};
    }
    if (!m.is_string()) fail(s.path, ": ", where, ": expected \"a b\" or [a, b], got ", m.type_name());
    const std::string line = m.get<std::string>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        fail(s.path, ": ", where, ": '", line, "' is not two tokens separated by one space");
    return {line.substr(0, space), line.substr(space + 1)};
}

void read_model(const Source& s, const json& model, TokenizerData& d,
                std::unordered_map<std::string, uint32_t>& text_to_id) {
    const std::string type = type_of(s, model, "model");
    if (type != "BPE") fail(s.path, ": model type '", type, "' is not supported (only BPE)");
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0))
        fail(s.path, ": BPE dropout is not supported");
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(affix) && !model[affix].is_null() &&
            !(model[affix].is_string() && model[affix].get<std::string>().empty()))
            fail(s.path, ": BPE ", affix, " is not supported");
    }
    if (s.bool_or(model, "byte_fallback", false, "model")) d.model_flags |= kModelByteFallback;
    if (s.bool_or(model, "fuse_unk", false, "model")) d.model_flags |= kModelFuseUnk;
    if (s.bool_or(model, "ignore_merges", false, "model")) d.model_flags |= kModelIgnoreMerges;
    const bool byte_level = d.model_flags & kModelByteLevel;

    const json& vocab = s.at(model, "vocab", "model");
    if (!vocab.is_object()) fail(s.path, ": model: \"vocab\" must be an object");
    d.vocab.reserve(vocab.size());
    text_to_id.reserve(vocab.size());
    for (const auto& [text, id_json] : vocab.items()) {
        const uint32_t id = s.id_of(id_json, "vocab entry '" + text + "'");
        if (text.empty()) fail(s.path, ": vocab: empty token (id ", id, ")");
        VocabEntry e{id, 0, text};
        if (byte_level) {
            if (auto bytes = byte_level_to_bytes(text)) e.bytes = *bytes;
            else e.flags = kVocabLiteral;
        }
        text_to_id.emplace(text, id);
        d.vocab.push_back(std::move(e));
    }
    std::vector<bool> seen(kMaxId + 1, false);
    for (const auto& e : d.vocab) {
        if (seen[e.id]) fail(s.path, ": vocab: id ", e.id, " is given to two tokens");
        seen[e.id] = true;
    }

    const json& merges = s.at(model, "merges", "model");
    if (!merges.is_array()) fail(s.path, ": model: \"merges\" must be an array");
    d.merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto parts = split_merge(s, merges[rank], rank);
        const std::string &a = parts.first, &b = parts.second;
        auto id = [&](const std::string& t) {
            auto it = text_to_id.find(t);
            if (it == text_to_id.end()) fail(s.path, ": merge #", rank, " '", a, " ", b, "': '", t, "' is not in the vocab");
            return it->second;
        };
        d.merges.push_back({id(a), id(b), id(a + b)});
    }

    const json& unk = model.contains("unk_token") ? model["unk_token"] : json();
    if (!unk.is_null()) {
        if (!unk.is_string()) fail(s.path, ": model: \"unk_token\" must be a string");
        auto it = text_to_id.find(unk.get<std::string>());
        if (it == text_to_id.end()) fail(s.path, ": model: unk_token '", unk.get<std::string>(), "' is not in the vocab");
        d.unk_id = it->second;
    }
}

void read_added_tokens(const Source& s, const json& list, TokenizerData& d) {
    if (list.is_null()) return;
    if (!list.is_array()) fail(s.path, ": \"added_tokens\" must be an array");
    for (const auto& t : list) {
        AddedToken a;
        a.id = s.id_of(s.at(t, "id", "added token"), "added token");
        a.content = s.string_at(t, "content", concat("added token ", a.id));
        if (a.content.empty()) fail(s.path, ": added token ", a.id, " is empty");
        const std::string where = concat("added token '", a.content, "'");
        if (s.bool_or(t, "single_word", false, where))
            fail(s.path, ": ", where, ": single_word added tokens are not supported");
        if (s.bool_or(t, "special", false, where)) a.flags |= kAddedSpecial;
        if (s.bool_or(t, "normalized", false, where)) a.flags |= kAddedNormalized;
        if (s.bool_or(t, "lstrip", false, where)) a.flags |= kAddedLstrip;
        if (s.bool_or(t, "rstrip", false, where)) a.flags |= kAddedRstrip;
        d.added.push_back(std::move(a));
    }
}

void build_decode_table(const DecoderChain& chain, TokenizerData& d) {
    uint32_t size = 0;
    for (const auto& e : d.vocab) size = std::max(size, e.id + 1);
    for (const auto& a : d.added) size = std::max(size, a.id + 1);
    d.decode.decoder = chain.kind;
    d.decode.strip_leading_spaces = chain.strip;
    d.decode.tokens.assign(size, DecodeEntry{});
    const bool byte_level = d.model_flags & kModelByteLevel;
    for (const auto& e : d.vocab) {
        // the byte-level model stores raw bytes already; decode the original text otherwise
        if (byte_level && !(e.flags & kVocabLiteral)) d.decode.tokens[e.id] = {TokenKind::normal, e.bytes};
        else d.decode.tokens[e.id] = decode_entry(chain, e.bytes, TokenKind::normal);
    }
    for (const auto& a : d.added)  // added tokens win over the model's vocab, as in decoding
        d.decode.tokens[a.id] = decode_entry(chain, a.content, a.flags & kAddedSpecial ? TokenKind::special : TokenKind::added);
}

// ---- tokenizer_config.json ----

std::optional<uint32_t> special_token_id(const Source& s, const json& config, const char* key,
                                         const TokenizerData& d,
                                         const std::unordered_map<std::string, uint32_t>& text_to_id) {
    if (!config.contains(key) || config[key].is_null()) return std::nullopt;
    const json& v = config[key];
    std::string text;
    if (v.is_string()) text = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string()) text = v["content"].get<std::string>();
    else fail(s.path, ": \"", key, "\" must be a string or an object with \"content\"");
    for (const auto& a : d.added)
        if (a.content == text) return a.id;
    auto it = text_to_id.find(text);
    if (it == text_to_id.end()) fail(s.path, ": ", key, " '", text, "' is not a token of the tokenizer");
    return it->second;
}

std::string read_chat_template(const Source& s, const json& config, const fs::path& dir) {
    if (config.contains("chat_template") && !config["chat_template"].is_null()) {
        const json& t = config["chat_template"];
        if (t.is_string()) return t.get<std::string>();
        if (!t.is_array()) fail(s.path, ": \"chat_template\" must be a string or a list of named templates");
        for (const auto& named : t)
            if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
                named["template"].is_string())
                return named["template"].get<std::string>();
        fail(s.path, ": \"chat_template\" lists no template named \"default\"");
    }
    const fs::path jinja = dir / "chat_template.jinja";
    if (!fs::exists(jinja)) return "";
    std::ifstream in(jinja, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) fail(jinja.string(), ": cannot read");
    return text.str();
}

}  // namespace

TokenizerData read_hf_tokenizer(const std::string& checkpoint_dir) {
    const fs::path dir(checkpoint_dir);
    const fs::path tokenizer_path = dir / "tokenizer.json";
    if (!fs::exists(tokenizer_path)) fail(tokenizer_path.string(), ": no such file (the checkpoint has no tokenizer.json)");
    const json tj = read_json_file(tokenizer_path.string());
    const Source s{tokenizer_path.string()};
    if (!tj.is_object()) fail(s.path, ": expected a JSON object");

    TokenizerData d;
    read_normalizer(s, tj.value("normalizer", json()), d.normalizer);
    read_pre_tokenizer(s, tj.value("pre_tokenizer", json()), d.pre_tokenizer);
    if (!d.pre_tokenizer.empty() && d.pre_tokenizer.back().kind == PreTokenizerKind::byte_level)
        d.model_flags |= kModelByteLevel;
    const DecoderChain chain = read_decoder(s, tj.value("decoder", json()));
    if ((chain.kind == DecoderKind::byte_level) != bool(d.model_flags & kModelByteLevel))
        fail(s.path, ": the decoder and the pre-tokenizer disagree on byte-level symbols");
    std::unordered_map<std::string, uint32_t> text_to_id;
    read_model(s, s.at(tj, "model", "tokenizer"), d, text_to_id);
    read_added_tokens(s, tj.value("added_tokens", json()), d);
    read_post_processor(s, tj.value("post_processor", json()), d);
    build_decode_table(chain, d);
    for (uint32_t id : d.prefix_ids)
        if (id >= d.decode.tokens.size()) fail(s.path, ": post_processor: id ", id, " is not a token");
    for (uint32_t id : d.suffix_ids)
        if (id >= d.decode.tokens.size()) fail(s.path, ": post_processor: id ", id, " is not a token");

    const fs::path config_path = dir / "tokenizer_config.json";
    if (fs::exists(config_path)) {
        const json config = read_json_file(config_path.string());
        const Source c{config_path.string()};
        if (!config.is_object()) fail(c.path, ": expected a JSON object");
        d.bos_id = special_token_id(c, config, "bos_token", d, text_to_id);
        d.eos_id = special_token_id(c, config, "eos_token", d, text_to_id);
        d.pad_id = special_token_id(c, config, "pad_token", d, text_to_id);
        d.chat_template = read_chat_template(c, config, dir);
    } else {
        d.chat_template = read_chat_template(s, json::object(), dir);
    }
    d.chat_format = detect_chat_format(d.chat_template);
    return d;
}

}  // namespace moepack
