# Run a command and check its exit status and output (ctest helper).
#   cmake -DCMD="prog|arg|arg" -DEXPECT_RC=2 [-DEXPECT_REGEX=re] [-DREJECT_REGEX=re] -P expect_exit.cmake
# CMD separates arguments with '|' (a ';' list would be split by add_test).
string(REPLACE "|" ";" cmd "${CMD}")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${err}${out}")
if(NOT "${rc}" STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "exit status ${rc}, expected ${EXPECT_RC}\n--- stdout:\n${out}\n--- stderr:\n${err}")
endif()
if(DEFINED EXPECT_REGEX AND NOT all MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "output does not match '${EXPECT_REGEX}'\n--- stdout:\n${out}\n--- stderr:\n${err}")
endif()
if(DEFINED REJECT_REGEX AND all MATCHES "${REJECT_REGEX}")
  message(FATAL_ERROR "output matches '${REJECT_REGEX}'\n--- stdout:\n${out}\n--- stderr:\n${err}")
endif()
message(STATUS "exit ${rc} as expected:\n${all}")
