// `idlefleet run`: generate text from a prompt on this machine.
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_locator.h"
#include "common/text_file.h"
#include "coordinator/openai.h"
#include "engine/model.h"
#include "engine/session.h"
#include "engine/tokenizer.h"

namespace idlefleet::cli {

namespace {

struct RunOptions {
  std::string model;
  std::string prompt = "Once upon a time";
  int64_t tokens = 256;
  engine::SamplerParams sampler;
  int threads = 0;
  int64_t context = 0;
  std::string export_session;
  std::string resume_session;
  bool quiet = false;
  bool no_echo = false;  // print only the generated text, not the prompt
  bool ignore_eos = false;  // run to -n tokens past end-of-sequence (the API's ignore_eos)
  bool tokens_given = false;  // -n on the command line (with --resume: tokens to add)
  int32_t logprobs = -1;      // --logprobs N: each token's logprobs and N alternatives, to stderr
};

// One line of JSON on stderr per generated token, as the API shows it:
// {"id": 5, "token": " cat", "logprob": -0.25, "top_logprobs": [{"id", "token", "logprob"}, ...]}.
void write_logprobs(const engine::Tokenizer& tok, int32_t id, const engine::TokenLogprobs& lp) {
  using nlohmann::json;
  json top = json::array();
  for (const engine::TokenLogprob& t : lp.top) {
    top.push_back({{"id", t.id}, {"token", std::string(tok.token_bytes(t.id))},
                   {"logprob", coordinator::api_logprob(t.logprob)}});
  }
  const json line = {{"id", id},
                     {"token", std::string(tok.token_bytes(id))},
                     {"logprob", coordinator::api_logprob(lp.chosen.logprob)},
                     {"top_logprobs", std::move(top)}};
  std::fprintf(stderr, "%s\n", line.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
}

void write(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void run(const RunOptions& o) {
  const std::string path = locate_model(o.model, !o.quiet);
  auto model = engine::Model::load(path);
  if (!model) throw CommandError{model.error().to_string()};
  const engine::Model& m = **model;
  const int threads = o.threads > 0 ? o.threads : engine::default_thread_count();
  engine::ThreadPool pool(threads);
  engine::Context ctx(m, o.context, &pool);
  engine::Generator gen(m, ctx);
  if (!o.quiet) {
    std::fprintf(stderr, "model: %s (%s), weights %.1f MB, KV cache %.1f MB for %lld positions\n", m.name().c_str(),
                 path.c_str(), static_cast<double>(m.weight_bytes()) / 1e6, static_cast<double>(ctx.kv_bytes()) / 1e6,
                 static_cast<long long>(ctx.capacity()));
  }
  const engine::Tokenizer& tok = m.tokenizer();

  if (!o.resume_session.empty()) {
    // A session file is input like any other: read with the bound its parser has.
    auto text = read_text_file(o.resume_session, engine::kSessionJsonBytesMax, "session file");
    if (!text) throw CommandError{text.error().to_string()};
    auto state = engine::SessionState::from_json(*text);
    if (!state) throw CommandError{o.resume_session + ": " + state.error().to_string()};
    // -n with --resume allows that many more tokens than the session has.
    if (o.tokens_given) state->max_tokens = o.tokens == 0 ? 0 : static_cast<int64_t>(state->produced_ids.size()) + o.tokens;
    auto st = gen.resume(*state);
    if (!st) throw CommandError{st.error().to_string()};
  } else {
    std::vector<int32_t> ids = tok.encode(o.prompt, tok.add_bos());
    if (ids.empty()) ids.push_back(tok.bos());
    // Stop at end of sequence, and at a new beginning (llama2.c's rule).
    std::vector<int32_t> stop_ids;
    if (!o.ignore_eos) stop_ids = {tok.eos(), tok.bos()};
    auto st = gen.start(std::move(ids), o.sampler, o.tokens, std::move(stop_ids));
    if (!st) throw CommandError{st.error().to_string()};
  }

  if (o.logprobs >= 0) {
    if (auto st = gen.enable_logprobs(o.logprobs); !st) throw CommandError{st.error().to_string()};
  }
  const int64_t produced_before = static_cast<int64_t>(gen.state().produced_ids.size());
  engine::Detokenizer detok(tok);
  // The prompt (and a resumed session's earlier tokens) primes the
  // detokenizer either way, so the generated text is the same with --no-echo.
  for (int32_t id : gen.state().prompt_ids) {
    const std::string piece = detok.push(id);
    if (!o.no_echo) write(piece);
  }
  for (int32_t id : gen.state().produced_ids) {
    const std::string piece = detok.push(id);
    if (!o.no_echo) write(piece);
  }
  for (;;) {
    auto next = gen.next();
    if (!next) throw CommandError{next.error().to_string()};
    if (*next < 0) break;
    if (const engine::TokenLogprobs* lp = gen.last_logprobs()) write_logprobs(tok, *next, *lp);
    write(detok.push(*next));
  }
  write(detok.flush());
  write("\n");

  if (!o.export_session.empty()) {
    // Written beside the target and renamed, so a failure never leaves half a session.
    const std::string temp = o.export_session + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      out << gen.state().to_json() << "\n";
      out.close();
      if (!out) {
        std::remove(temp.c_str());
        throw CommandError{"cannot write " + o.export_session};
      }
    }
    if (std::rename(temp.c_str(), o.export_session.c_str()) != 0) {
      std::remove(temp.c_str());
      throw CommandError{"cannot write " + o.export_session};
    }
  }
  // Tokens produced by this process (a resumed session's earlier ones excluded).
  const int64_t produced = static_cast<int64_t>(gen.state().produced_ids.size()) - produced_before;
  const double prefill_tps = gen.prefill_seconds() > 0 ? gen.prefill_tokens() / gen.prefill_seconds() : 0.0;
  const double decode_tps = gen.decode_seconds() > 0 ? (produced - 1) / gen.decode_seconds() : 0.0;
  std::fprintf(stderr,
               "prefill: %lld tokens, %.1f tokens/s | decode: %lld tokens, %.1f tokens/s | %d threads, %s kernels\n",
               static_cast<long long>(gen.prefill_tokens()), prefill_tps, static_cast<long long>(produced),
               decode_tps, threads, ctx.kernels().name);
}

}  // namespace

void add_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt with a local model");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: $IDLEFLEET_MODEL or the bundled test model)");
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text")->capture_default_str();
  cmd->add_option("-n,--tokens", o->tokens, "Tokens to generate at most (0: until the context is full; with --resume: more tokens)")
      ->check(CLI::Range(int64_t{0}, engine::kModelContextMax))->capture_default_str();
  cmd->add_option("--temp", o->sampler.temperature, "Temperature; 0 is greedy")->check(CLI::Range(0.0f, engine::kTemperatureMax))->capture_default_str();
  cmd->add_option("--top-k", o->sampler.top_k, "Keep the k most likely tokens (0: off)")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--top-p", o->sampler.top_p, "Nucleus sampling mass (1: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", o->sampler.min_p, "Drop tokens below min-p x the top probability (0: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--repeat-penalty", o->sampler.repeat_penalty, "Repetition penalty (1: off)")->check(CLI::Range(0.0f, engine::kRepeatPenaltyMax));
  cmd->add_option("--repeat-last-n", o->sampler.repeat_last_n, "Tokens the penalty looks back over")->check(CLI::Range(0, engine::kRepeatLastNMax));
  cmd->add_option("--presence-penalty", o->sampler.presence_penalty,
                  "Subtract this from the logit of every token already generated (OpenAI's presence_penalty; 0: off)")
      ->check(CLI::Range(-engine::kPresencePenaltyMax, engine::kPresencePenaltyMax));
  cmd->add_option("--frequency-penalty", o->sampler.frequency_penalty,
                  "Subtract this times the count of each token already generated (OpenAI's frequency_penalty; 0: off)")
      ->check(CLI::Range(-engine::kFrequencyPenaltyMax, engine::kFrequencyPenaltyMax));
  cmd->add_option("--seed", o->sampler.seed, "Sampling seed");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)")->check(CLI::Range(1, engine::kThreadsMax));
  cmd->add_option("-c,--ctx", o->context, "Context length (default: the model's)")->check(CLI::Range(int64_t{0}, engine::kModelContextMax));
  cmd->add_option("--export-session", o->export_session, "Write the finished session (ids, sampler, seed) as JSON to this file");
  cmd->add_option("--resume", o->resume_session, "Continue a session exported by --export-session (prompt and sampler come from it)");
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the text and the final speed line");
  cmd->add_flag("--no-echo", o->no_echo, "Print only the generated text, not the prompt (as the API returns it)");
  cmd->add_flag("--ignore-eos", o->ignore_eos,
                "Keep generating past end-of-sequence until -n tokens (the API's ignore_eos)");
  cmd->add_option("--logprobs", o->logprobs,
                  "Print each generated token's logprob and this many likeliest alternatives to stderr, a JSON "
                  "line per token (OpenAI's logprobs with top_logprobs)")
      ->check(CLI::Range(0, engine::kTopLogprobsMax));
  cmd->callback([o, cmd] {
    o->tokens_given = cmd->count("--tokens") > 0;
    if (auto v = o->sampler.validate(); !v) throw CommandError{v.error().to_string()};
    run(*o);
  });
}

}  // namespace idlefleet::cli
