// Model tools: make GGUF files the engine runs.
//
//  - convert_llama2c: a llama2.c checkpoint and tokenizer -> an F32 GGUF with
//    llama.cpp's "llama" names and metadata (model_format.h).
//  - quantize_model: a GGUF -> the same model with its weight matrices in F16,
//    Q8_0 or Q4_0.
//  - synth_model: a model of a real shape (TinyStories-110M, TinyLlama-1.1B)
//    with seeded random weights and a complete SentencePiece-style tokenizer,
//    for benchmarks and tests that need the size of a real model but not its
//    knowledge.
//
// All three stream: tensors are read, converted and written a row at a time,
// so memory stays a few rows plus the tokenizer whatever the model's size
// (GgufWriter would hold every tensor until write()). Inputs are validated
// before use and every failure returns an Error naming what is wrong; a failed
// run leaves no file under the output path (it writes a temporary file and
// renames it into place). The functions print nothing: progress and notes go
// to the caller's callbacks, called on the calling thread.
//
// Thread-safety: the functions share no state; concurrent calls on different
// paths are fine.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "engine/gguf.h"

namespace idlefleet::engine {

// Limits on a llama2.c checkpoint header; larger values are refused as
// corrupt before anything is allocated from them.
inline constexpr int64_t kLlama2cDimMax = 65536;
inline constexpr int64_t kLlama2cHiddenDimMax = 1 << 18;
inline constexpr int64_t kLlama2cLayersMax = 1024;
inline constexpr int64_t kLlama2cVocabMax = 1 << 20;
inline constexpr int64_t kLlama2cSeqLenMax = 1 << 20;
// A tokenizer piece's length; llama2.c's tokenizer export stays far below.
inline constexpr int64_t kLlama2cPieceBytesMax = 1024;

// Reports progress in weight elements: `done` of `total` written so far. Called
// at most a few hundred times per run and once with done == total at the end.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;
// Receives a sentence for a person, e.g. why a tensor was left unquantized.
using NoteFn = std::function<void(const std::string& note)>;

// Converts llama2.c's `checkpoint` (run.c's format: seven int32 header values,
// then F32 weights) and its `tokenizer` file into an F32 GGUF at `out_path`.
// The model is named after the checkpoint's file stem. Token pieces keep their
// scores; spaces become U+2581 and ids 0, 1, 2 become "<unk>", "<s>", "</s>",
// as llama.cpp's convert-llama2c does.
Status convert_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                       const std::string& out_path, const ProgressFn& progress = {});

// Writes `in` with its 2-D weights in `type` (kF16, kQ8_0 or kQ4_0) to `out`.
// Metadata is copied, general.file_type set to match. 1-D tensors (the norms)
// are stored F32. For Q8_0 and Q4_0 a matrix whose rows are not a whole
// number of 32-element blocks keeps its stored type, and `note` says so.
// Inputs may hold F32, F16, Q8_0 or Q4_0 tensors.
// REQUIRES: `in` and `out` name different files (checked: kInvalidArgument).
Status quantize_model(const std::string& in, const std::string& out, TensorType type,
                      const ProgressFn& progress = {}, const NoteFn& note = {});

struct SynthOptions {
  std::string shape = "tiny110m";   // "tiny110m" | "tinyllama1b"
  TensorType type = TensorType::kQ8_0;  // kF32, kF16, kQ8_0 or kQ4_0
  uint64_t seed = 1;
};

// Writes a synthetic model of `o.shape` to `out_path`: weights approximately
// normal with standard deviation 0.02, norm weights near 1, every tensor but
// the norms in `o.type`, and a 32000-piece tokenizer that covers any text (byte
// fallback, printable ASCII, then letter n-grams). The same options give the
// same bytes on any machine.
Status synth_model(const SynthOptions& o, const std::string& out_path,
                   const ProgressFn& progress = {});

// The weight types the tools write, by their usual lower-case names
// ("f32", "f16", "q8_0", "q4_0"); kInvalidArgument for anything else.
Result<TensorType> weight_type_from_name(std::string_view name);

// What a model file holds, for the one-line summaries the commands print.
struct ModelSummary {
  uint64_t tensor_count = 0;
  uint64_t parameter_count = 0;  // elements over all tensors
  uint64_t file_bytes = 0;
};
Result<ModelSummary> summarize_model(const std::string& path);
// "111 tensors, 110.0M parameters, 117.4 MB" (decimal units).
std::string format_model_summary(const ModelSummary& s);

// Turns progress updates into text for a person, without printing it: on a
// terminal (`interactive`) one line rewritten in place ("\r<label> 42%") at
// each whole percent; otherwise a line every 10%, so that logs stay short.
// Nothing is shown until `quiet_ms` after the first update, so work that ends
// sooner prints nothing. `emit` receives the text, with its "\r" or "\n".
ProgressFn progress_printer(std::string label, bool interactive,
                            std::function<void(std::string_view text)> emit,
                            uint64_t quiet_ms = 500);

}  // namespace idlefleet::engine
