# Launcher and layout tests. Included by tests/CMakeLists.txt (include(transport/launcher_tests.cmake));
# paths are relative to this file so the include works from any directory.
set(_sluice_launcher_tests_dir ${CMAKE_CURRENT_LIST_DIR})
set(_sluice_tests_root ${_sluice_launcher_tests_dir}/..)
set(_sluice_transport_src ${_sluice_launcher_tests_dir}/../../transport/src)

include(GoogleTest)

# Shared by every multi-process test: run a program, capture its output, watchdog on its group.
if(NOT TARGET sluice_test_subprocess)
  add_library(sluice_test_subprocess STATIC ${_sluice_tests_root}/support/subprocess.cpp)
  target_include_directories(sluice_test_subprocess PUBLIC ${_sluice_tests_root}/support)
  target_compile_features(sluice_test_subprocess PUBLIC cxx_std_20)
  sluice_use_warnings(sluice_test_subprocess)
endif()

# A member that registers a fake address through LauncherSession and prints the table it gets.
# It also reaches into transport/src for the framing helpers, to play a bad client.
add_executable(fake_member ${_sluice_tests_root}/support/fake_member.cpp)
target_include_directories(fake_member PRIVATE ${_sluice_transport_src})
target_link_libraries(fake_member PRIVATE sluice_transport)
sluice_use_warnings(fake_member)

add_executable(layout_test ${_sluice_launcher_tests_dir}/layout_test.cpp)
target_link_libraries(layout_test PRIVATE sluice_transport GTest::gtest_main)
sluice_use_warnings(layout_test)
gtest_discover_tests(layout_test PROPERTIES TIMEOUT 30)

add_executable(launcher_test ${_sluice_launcher_tests_dir}/launcher_test.cpp)
target_include_directories(launcher_test PRIVATE ${_sluice_transport_src})
target_link_libraries(launcher_test PRIVATE sluice_transport sluice_test_subprocess
                                            GTest::gtest_main)
target_compile_definitions(launcher_test PRIVATE
  SLUICE_RUN_PATH="$<TARGET_FILE:sluice-run>"
  FAKE_MEMBER_PATH="$<TARGET_FILE:fake_member>")
add_dependencies(launcher_test sluice-run fake_member)
sluice_use_warnings(launcher_test)
# Each test runs the launcher with its own watchdog (60 s); this is the backstop above it.
gtest_discover_tests(launcher_test PROPERTIES TIMEOUT 120)
