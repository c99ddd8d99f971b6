# libFuzzer targets, one per parser, built from the parsers' own sources only
# so that clang needs none of the rest of the project.
# Run one: build/fuzz/fuzz_gguf tests/fuzz/gguf/corpus -max_total_time=60
set(FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -g -O1)
find_package(nlohmann_json 3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)  # common/crypto.cc (receipts)

# The parsers' sources are compiled once, into one library with the fuzzer's
# instrumentation; each target links what it uses from it. (Compiled per
# target, chat_template.cc was built three times and openai.cc twice: the
# fuzz build took 271 s of CPU, 2026-11-29.)
set(IDLEFLEET_FUZZ_SOURCES common/result.cc common/crypto.cc common/text_file.cc
  core/protocol.cc core/policy.cc core/signals.cc core/time.cc core/verification.cc
  agent/replay.cc transport/query.cc
  coordinator/openai.cc coordinator/multipart.cc coordinator/batch.cc coordinator/config.cc store/location.cc
  engine/gguf.cc engine/quant.cc engine/stop_strings.cc engine/chat_template.cc engine/tokenizer.cc
  sim/scenario.cc)
list(TRANSFORM IDLEFLEET_FUZZ_SOURCES PREPEND ${PROJECT_SOURCE_DIR}/src/)
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)  # scenario and config files
add_library(idlefleet_fuzz_parsers STATIC ${IDLEFLEET_FUZZ_SOURCES})
target_include_directories(idlefleet_fuzz_parsers PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(idlefleet_fuzz_parsers PUBLIC nlohmann_json::nlohmann_json PkgConfig::SODIUM PkgConfig::TOMLPP)
target_compile_options(idlefleet_fuzz_parsers PRIVATE -fsanitize=fuzzer-no-link,address,undefined
  -fno-omit-frame-pointer -g -O1)

# idlefleet_fuzz(NAME): build/fuzz/fuzz_NAME from tests/fuzz/NAME/fuzz_NAME.cc
# and the parsers it calls.
function(idlefleet_fuzz name)
  add_executable(fuzz_${name} ${PROJECT_SOURCE_DIR}/tests/fuzz/${name}/fuzz_${name}.cc)
  target_link_libraries(fuzz_${name} PRIVATE idlefleet_fuzz_parsers)
  target_compile_options(fuzz_${name} PRIVATE ${FUZZ_FLAGS})
  target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer,address,undefined)
endfunction()

foreach(target gguf protocol replay api_request chat_template batch_upload scenario config)
  idlefleet_fuzz(${target})
endforeach()
