# libFuzzer targets, one per parser, each built from the parser's own sources
# so that clang needs none of the rest of the project.
# Run one: build/fuzz/fuzz_gguf tests/fuzz/gguf/corpus -max_total_time=60
set(FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -g -O1)

add_executable(fuzz_gguf
  ${PROJECT_SOURCE_DIR}/tests/fuzz/gguf/fuzz_gguf.cc
  ${PROJECT_SOURCE_DIR}/src/engine/gguf.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_gguf PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_options(fuzz_gguf PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined)

find_package(nlohmann_json 3 REQUIRED)
add_executable(fuzz_protocol
  ${PROJECT_SOURCE_DIR}/tests/fuzz/protocol/fuzz_protocol.cc
  ${PROJECT_SOURCE_DIR}/src/core/protocol.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_protocol PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(fuzz_protocol PRIVATE nlohmann_json::nlohmann_json)
target_compile_options(fuzz_protocol PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_protocol PRIVATE -fsanitize=fuzzer,address,undefined)

add_executable(fuzz_replay
  ${PROJECT_SOURCE_DIR}/tests/fuzz/replay/fuzz_replay.cc
  ${PROJECT_SOURCE_DIR}/src/agent/replay.cc
  ${PROJECT_SOURCE_DIR}/src/core/signals.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_replay PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(fuzz_replay PRIVATE nlohmann_json::nlohmann_json)
target_compile_options(fuzz_replay PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_replay PRIVATE -fsanitize=fuzzer,address,undefined)

add_executable(fuzz_api_request
  ${PROJECT_SOURCE_DIR}/tests/fuzz/api_request/fuzz_api_request.cc
  ${PROJECT_SOURCE_DIR}/src/coordinator/openai.cc
  ${PROJECT_SOURCE_DIR}/src/engine/stop_strings.cc
  ${PROJECT_SOURCE_DIR}/src/engine/chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/engine/tokenizer.cc
  ${PROJECT_SOURCE_DIR}/src/engine/gguf.cc
  ${PROJECT_SOURCE_DIR}/src/engine/quant.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_api_request PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(fuzz_api_request PRIVATE nlohmann_json::nlohmann_json)
target_compile_options(fuzz_api_request PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_api_request PRIVATE -fsanitize=fuzzer,address,undefined)

add_executable(fuzz_chat_template
  ${PROJECT_SOURCE_DIR}/tests/fuzz/chat_template/fuzz_chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/engine/chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_chat_template PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_options(fuzz_chat_template PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_chat_template PRIVATE -fsanitize=fuzzer,address,undefined)

add_executable(fuzz_batch_upload
  ${PROJECT_SOURCE_DIR}/tests/fuzz/batch_upload/fuzz_batch_upload.cc
  ${PROJECT_SOURCE_DIR}/src/coordinator/multipart.cc
  ${PROJECT_SOURCE_DIR}/src/coordinator/batch.cc
  ${PROJECT_SOURCE_DIR}/src/coordinator/openai.cc
  ${PROJECT_SOURCE_DIR}/src/engine/stop_strings.cc
  ${PROJECT_SOURCE_DIR}/src/engine/chat_template.cc
  ${PROJECT_SOURCE_DIR}/src/engine/tokenizer.cc
  ${PROJECT_SOURCE_DIR}/src/engine/gguf.cc
  ${PROJECT_SOURCE_DIR}/src/engine/quant.cc
  ${PROJECT_SOURCE_DIR}/src/common/result.cc)
target_include_directories(fuzz_batch_upload PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(fuzz_batch_upload PRIVATE nlohmann_json::nlohmann_json)
target_compile_options(fuzz_batch_upload PRIVATE ${FUZZ_FLAGS})
target_link_options(fuzz_batch_upload PRIVATE -fsanitize=fuzzer,address,undefined)
