# libFuzzer targets, one per parser, each built from the parser's own sources
# so that clang needs none of the rest of the project.
# Run one: build/fuzz/fuzz_gguf tests/fuzz/gguf/corpus -max_total_time=60
set(FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -g -O1)
find_package(nlohmann_json 3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)  # common/crypto.cc (receipts)

# idlefleet_fuzz(NAME SOURCE...): build/fuzz/fuzz_NAME from
# tests/fuzz/NAME/fuzz_NAME.cc, the sources given (under src/) and result.cc.
function(idlefleet_fuzz name)
  set(sources ${PROJECT_SOURCE_DIR}/tests/fuzz/${name}/fuzz_${name}.cc ${PROJECT_SOURCE_DIR}/src/common/result.cc)
  foreach(source ${ARGN})
    list(APPEND sources ${PROJECT_SOURCE_DIR}/src/${source})
  endforeach()
  add_executable(fuzz_${name} ${sources})
  target_include_directories(fuzz_${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(fuzz_${name} PRIVATE nlohmann_json::nlohmann_json)
  target_compile_options(fuzz_${name} PRIVATE ${FUZZ_FLAGS})
  target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer,address,undefined)
endfunction()

# The OpenAI request parser and the text code it calls (tokenizer, chat
# templates, stop strings), and the query-string parser.
set(FUZZ_API_SOURCES transport/query.cc coordinator/openai.cc engine/stop_strings.cc engine/chat_template.cc engine/tokenizer.cc
  engine/gguf.cc engine/quant.cc)

idlefleet_fuzz(gguf engine/gguf.cc)
idlefleet_fuzz(protocol core/protocol.cc core/policy.cc core/signals.cc core/time.cc common/crypto.cc)
target_link_libraries(fuzz_protocol PRIVATE PkgConfig::SODIUM)
idlefleet_fuzz(replay agent/replay.cc core/signals.cc)
idlefleet_fuzz(api_request ${FUZZ_API_SOURCES})
idlefleet_fuzz(chat_template engine/chat_template.cc)
idlefleet_fuzz(batch_upload coordinator/multipart.cc coordinator/batch.cc ${FUZZ_API_SOURCES})
# Scenario files (TOML through toml++, the policy checks of core).
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)
idlefleet_fuzz(scenario sim/scenario.cc common/text_file.cc core/policy.cc core/signals.cc core/time.cc)
target_link_libraries(fuzz_scenario PRIVATE PkgConfig::TOMLPP)
# The coordinator's config file (TOML through toml++).
idlefleet_fuzz(config coordinator/config.cc common/text_file.cc core/verification.cc)
target_link_libraries(fuzz_config PRIVATE PkgConfig::TOMLPP)
