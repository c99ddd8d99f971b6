// `idlefleet embed`: one embedding vector for a text, as OpenAI's
// /v1/embeddings computes it here (engine::Context::embed_sequence: the final
// hidden state after the output RMSNorm, mean-pooled over the tokens, BOS
// included when the model adds one, L2-normalised).
//
// Prints one JSON object on stdout:
//   {"model":"<name>","tokens":N,"embedding":[f0, f1, ...]}
// each value written with the fewest digits that read back as the same float.
#include <charconv>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "cli/model_locator.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace idlefleet::cli {

namespace {

struct EmbedOptions {
  std::string model;
  std::string prompt;
  int threads = 0;
  int64_t context = 0;
};

void embed(const EmbedOptions& o) {
  const std::string path = locate_model(o.model, false);
  auto model = engine::Model::load(path);
  if (!model) throw CommandError{model.error().to_string()};
  const engine::Model& m = **model;
  const engine::Tokenizer& tok = m.tokenizer();
  std::vector<int32_t> ids = tok.encode(o.prompt, tok.add_bos());
  if (ids.empty()) ids.push_back(tok.bos());
  const int threads = o.threads > 0 ? o.threads : engine::default_thread_count();
  engine::ThreadPool pool(threads);
  // Just the positions the text needs, not the model's whole context: the
  // KV cache is allocated for all of them.
  const int64_t n_ctx = o.context > 0 ? o.context : static_cast<int64_t>(ids.size());
  engine::Context ctx(m, n_ctx, &pool);
  auto vector = ctx.embed_sequence(ids);
  if (!vector) throw CommandError{vector.error().to_string()};

  std::string out = std::string("{\"model\":").append(nlohmann::json(m.name()).dump());
  out.append(",\"tokens\":").append(std::to_string(ids.size())).append(",\"embedding\":[");
  char buf[32];
  for (size_t i = 0; i < vector->size(); ++i) {
    if (i > 0) out.push_back(',');
    const auto r = std::to_chars(buf, buf + sizeof buf, (*vector)[i]);
    out.append(buf, r.ptr);
  }
  out.append("]}\n");
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_embed(CLI::App& app) {
  auto o = std::make_shared<EmbedOptions>();
  CLI::App* cmd = app.add_subcommand("embed", "Print the embedding of a text as JSON (mean-pooled, L2-normalised)");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: $IDLEFLEET_MODEL or the bundled test model)");
  cmd->add_option("-p,--prompt", o->prompt, "Text to embed")->required();
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)")->check(CLI::Range(1, engine::kThreadsMax));
  cmd->add_option("-c,--ctx", o->context, "Positions to allow (default: the text's length; at most the model's context)")
      ->check(CLI::Range(int64_t{0}, engine::kModelContextMax));
  cmd->callback([o] { embed(*o); });
}

}  // namespace idlefleet::cli
