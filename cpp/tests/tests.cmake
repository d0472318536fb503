# C++ tests (included from the root CMakeLists.txt when GoogleTest is found).
#
# Fixtures: "golden" runs tests/cpp_golden.py with OVSS_PYTHON (the Python runtime writes the
# folders, images, labels and logits the C++ side must reproduce); "bad_folders" makes broken
# copies for the programs' error tests; "camera_out" is the camera run its check reads back.
include(GoogleTest)
set(OVSS_GOLDEN_DIR "${CMAKE_BINARY_DIR}/golden")
set(OVSS_TEST_OUT "${CMAKE_BINARY_DIR}/test_out")
set(_expect "${CMAKE_SOURCE_DIR}/cpp/tests/expect_exit.cmake")

add_executable(ovss_unit_tests cpp/tests/test_units.cpp cpp/tests/test_label_map.cpp cpp/tests/test_png.cpp)
add_executable(ovss_golden_tests cpp/tests/test_golden.cpp cpp/tests/test_errors.cpp cpp/tests/test_hostile.cpp)
add_executable(ovss_camera_check cpp/tests/camera_check.cpp)
target_sources(ovss_unit_tests PRIVATE cpp/tests/test_resize.cpp)
foreach(t ovss_unit_tests ovss_golden_tests)
  target_compile_options(${t} PRIVATE ${OVSS_WARNINGS} ${OVSS_FP_FLAGS})
  target_link_libraries(${t} PRIVATE ovss_runtime nlohmann_json::nlohmann_json GTest::gtest_main)
endforeach()
if(ZLIB_FOUND)  # the label PNG test inflates and CRC-checks what the encoders write
  target_compile_definitions(ovss_unit_tests PRIVATE OVSS_TEST_HAVE_ZLIB=1)
  target_link_libraries(ovss_unit_tests PRIVATE ZLIB::ZLIB)
endif()
target_link_libraries(ovss_camera_check PRIVATE nlohmann_json::nlohmann_json ${OpenCV_LIBS})

gtest_discover_tests(ovss_unit_tests TEST_PREFIX "unit.")

if(NOT OVSS_PYTHON OR NOT EXISTS "${OVSS_PYTHON}")
  message(STATUS "OVSS_PYTHON not set or missing: golden parity, error and camera tests will SKIP "
                 "(configure with -DOVSS_PYTHON=/path/to/.venv/bin/python)")
  gtest_discover_tests(ovss_golden_tests TEST_PREFIX "golden.")
  return()
endif()
message(STATUS "golden files: ${OVSS_PYTHON} -m tests.cpp_golden --out ${OVSS_GOLDEN_DIR}")

add_test(NAME golden.write
         COMMAND "${OVSS_PYTHON}" -m tests.cpp_golden --out "${OVSS_GOLDEN_DIR}"
         WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
set_tests_properties(golden.write PROPERTIES FIXTURES_SETUP golden TIMEOUT 600
                     ENVIRONMENT "HF_HUB_OFFLINE=1;PYTHONPATH=${CMAKE_SOURCE_DIR}")
gtest_discover_tests(ovss_golden_tests TEST_PREFIX "golden."
                     PROPERTIES FIXTURES_REQUIRED golden ENVIRONMENT "OVSS_GOLDEN_DIR=${OVSS_GOLDEN_DIR}")

add_test(NAME cli.bad_folders
         COMMAND ${CMAKE_COMMAND} -DGOLDEN=${OVSS_GOLDEN_DIR} -DOUT=${OVSS_TEST_OUT}/bad -P
                 "${CMAKE_SOURCE_DIR}/cpp/tests/make_bad_folders.cmake")
set_tests_properties(cli.bad_folders PROPERTIES FIXTURES_REQUIRED golden FIXTURES_SETUP bad_folders)

# ovss_expect(NAME RC REGEX cmd args...): run a program, check exit status and output.
function(ovss_expect name rc regex)
  list(JOIN ARGN "|" cmd)
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} "-DCMD=${cmd}" -DEXPECT_RC=${rc} "-DEXPECT_REGEX=${regex}"
                                -P "${_expect}")
  set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "golden;bad_folders")
endfunction()

set(_g "${OVSS_GOLDEN_DIR}")
set(_img "${_g}/images/large_300x410.png")
set(_infer $<TARGET_FILE:ovss_infer>)
set(_o "${OVSS_TEST_OUT}")
ovss_expect(cli.infer_ok 0 "\"mode\":\"slide\".*\"windows\":6"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/overlay.png
            --labels-out ${_o}/labels.png --threads 1)
set_tests_properties(cli.infer_ok PROPERTIES FIXTURES_SETUP labels_png)
# Open set: T = 0.5 marks some of the random-weight model's pixels unknown; the fast path's PNG
# and the exact path's .npy must agree, and Pillow must read the PNGs as palette images.
ovss_expect(cli.infer_open_set_fast 0 "\"postprocess\":\"fast\".*\"unknown_fraction\":0\\.[0-9]*[1-9]"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/overlay_open.png
            --labels-out ${_o}/open_fast.png --scores-out ${_o}/scores_fast.png --score-threshold 0.5 --threads 1)
ovss_expect(cli.infer_open_set_exact 0 "\"postprocess\":\"exact\".*\"unknown_fraction\":0\\.[0-9]*[1-9]"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/overlay_open_exact.png
            --labels-out ${_o}/open_exact.npy --scores-out ${_o}/scores_exact.npy --score-threshold 0.5
            --postprocess exact --threads 1)
set_tests_properties(cli.infer_open_set_fast cli.infer_open_set_exact PROPERTIES FIXTURES_SETUP open_set)
add_test(NAME cli.labels_png_pillow
         COMMAND "${OVSS_PYTHON}" "${CMAKE_SOURCE_DIR}/cpp/tests/check_label_png.py" ${_o}/labels.png
                 "${_g}/seg/vit_fixed__large_300x410__auto.labels.npy")
set_tests_properties(cli.labels_png_pillow PROPERTIES FIXTURES_REQUIRED "golden;labels_png")
add_test(NAME cli.labels_png_open_set_pillow
         COMMAND "${OVSS_PYTHON}" "${CMAKE_SOURCE_DIR}/cpp/tests/check_label_png.py" ${_o}/open_fast.png
                 ${_o}/open_exact.npy --unknown)
set_tests_properties(cli.labels_png_open_set_pillow PROPERTIES FIXTURES_REQUIRED open_set)
ovss_expect(cli.infer_bad_threshold 2 "error: --score-threshold must be in"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --score-threshold 1)
ovss_expect(cli.infer_bad_postprocess 2 "error: postprocess must be fast or exact, got 'quick'"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --postprocess quick)
ovss_expect(cli.infer_bad_scores_suffix 2 "error: --scores-out must end in .png or .npy"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --scores-out ${_o}/s.tif)
ovss_expect(cli.infer_vocab_input_ok 0 "\"classes_present\""
            ${_infer} --model ${_g}/folders/vit_input --image ${_img} --out ${_o}/overlay_input.png --threads 1)
ovss_expect(cli.infer_missing_folder 2 "error: model folder .* does not exist or is not a folder"
            ${_infer} --model ${_o}/bad/nope --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_missing_manifest 2 "error: .*manifest.json' is missing: not a deployable folder"
            ${_infer} --model ${_o}/bad/no_manifest --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_corrupt_manifest 2 "error: .*manifest.json' is not valid JSON"
            ${_infer} --model ${_o}/bad/corrupt_json --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_manifest_missing_field 2 "error: manifest is missing 'classes'"
            ${_infer} --model ${_o}/bad/missing_field --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_model_missing 2 "error: model file .*model.onnx' named by the manifest is missing"
            ${_infer} --model ${_o}/bad/no_model --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_bad_sha256 2 "error: .*model.onnx' does not match the manifest's sha256"
            ${_infer} --model ${_o}/bad/bad_sha --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.infer_missing_image 2 "error: image file .* does not exist"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_o}/nope.png --out ${_o}/x.png)
ovss_expect(cli.infer_garbage_image 2 "error: cannot decode image"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_g}/bad_images/garbage.png --out ${_o}/x.png)
ovss_expect(cli.infer_16bit_image 2 "error: .* is a non-8-bit image"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_g}/bad_images/gray16.png --out ${_o}/x.png)
ovss_expect(cli.infer_bad_mode 2 "error: mode must be one of auto, whole, slide"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --mode tiles)
# Slide plans: the manifest's (flush, the official placement) unless --slide-edge says otherwise.
ovss_expect(cli.infer_slide_edge_grid 0 "\"mode\":\"slide\".*\"windows\":6"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/overlay_grid.png --slide-edge grid
            --threads 1)
ovss_expect(cli.infer_bad_slide_edge 2 "usage: ovss_infer.*error: --slide-edge must be flush or grid, got 'edge'"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --slide-edge edge)
ovss_expect(cli.infer_unknown_flag 2 "usage: ovss_infer.*error: unknown argument '--bogus'"
            ${_infer} --model ${_g}/folders/vit_fixed --bogus 1)

# --help prints the usage to stdout; --precision / --classes the programs cannot honour are
# refused with one line (README "C++ runtime": fp32 graph, the folder's own vocabulary).
ovss_expect(cli.infer_help 0 "^usage: ovss_infer" ${_infer} --help)
ovss_expect(cli.infer_precision_missing 2 "^error: this folder has no fp16 variant; make one with"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --precision fp16)
ovss_expect(cli.infer_precision_bad 2 "error: --precision must be fp32, fp16 or int8, got 'fp8'"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --precision fp8)
ovss_expect(cli.infer_precision_fp32 0 "\"precision\":\"fp32\""
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --precision fp32 --threads 1)
ovss_expect(cli.infer_classes_fixed 2 "^error: --classes: this folder was exported with a fixed vocabulary"
            ${_infer} --model ${_g}/folders/vit_fixed --image ${_img} --out ${_o}/x.png --classes a,b)
ovss_expect(cli.infer_classes_input 2 "^error: --classes: the C\\+\\+ programs have no text encoder"
            ${_infer} --model ${_g}/folders/vit_input --image ${_img} --out ${_o}/x.png --classes a,b)

# The camera program over the golden clip: 12 of its 20 frames, read back by ovss_camera_check.
set(_camera $<TARGET_FILE:ovss_camera>)
set(_clip "${_g}/video/clip.mp4")
add_test(NAME camera.video_run
         COMMAND ${_camera} --model ${_g}/folders/vit_fixed --source ${_clip} --out ${_o}/camera.mp4
                 --max-frames 12 --queue 2 --threads 1 --json ${_o}/camera_stats.json)
set_tests_properties(camera.video_run PROPERTIES FIXTURES_REQUIRED golden FIXTURES_SETUP camera_out
                     PASS_REGULAR_EXPRESSION "\"stop_reason\":\"max_frames\"")
add_test(NAME camera.video_check COMMAND ovss_camera_check ${_o}/camera_stats.json ${_o}/camera.mp4 12)
set_tests_properties(camera.video_check PROPERTIES FIXTURES_REQUIRED camera_out)
ovss_expect(camera.image_folder 0 "\"frames_processed\":9.*\"stop_reason\":\"end\""
            ${_camera} --model ${_g}/folders/vit_fixed --source ${_g}/images --out ${_o}/camera_pngs --threads 1)
ovss_expect(camera.image_folder_open_set 0 "\"score_threshold\":0.5.*\"stop_reason\":\"end\""
            ${_camera} --model ${_g}/folders/vit_fixed --source ${_g}/images --out ${_o}/camera_open --threads 1
            --score-threshold 0.5)
ovss_expect(camera.missing_source 2 "error: source file or folder .* does not exist"
            ${_camera} --model ${_g}/folders/vit_fixed --source ${_o}/nope.mp4)
ovss_expect(camera.bad_model 2 "error: .*is not valid JSON"
            ${_camera} --model ${_o}/bad/corrupt_json --source ${_clip})
ovss_expect(camera.help 0 "^usage: ovss_camera" ${_camera} --help)
ovss_expect(camera.classes_fixed 2 "^error: --classes: this folder was exported with a fixed vocabulary"
            ${_camera} --model ${_g}/folders/vit_fixed --source ${_clip} --classes a,b)
ovss_expect(camera.precision_missing 2 "^error: this folder has no int8 variant"
            ${_camera} --model ${_g}/folders/vit_fixed --source ${_clip} --precision int8)
# SIGINT after 4 s of the 7-9 images paced at 1 fps (7-9 s; 4 s leaves a loaded machine time to
# start the program and install its handler): a clean stop, exit 0, video finalised.
find_program(OVSS_TIMEOUT timeout)
if(OVSS_TIMEOUT)
  ovss_expect(camera.sigint_clean_stop 0 "stopping cleanly.*\"stop_reason\":\"stopped\""
              ${OVSS_TIMEOUT} --preserve-status -s INT 4 ${_camera} --model ${_g}/folders/vit_fixed
              --source ${_g}/images --realtime --fps 1 --out ${_o}/camera_sigint.mp4 --threads 1)
endif()

# ---- hostile input (issue 17): folders, images, arguments, output paths -------------------------
# Each must fail fast with one "error: ..." line and exit 2 (the image bombs within seconds: the
# pixel limit is read from the header before anything is decoded).
add_test(NAME cli.hostile_images
         COMMAND "${OVSS_PYTHON}" "${CMAKE_SOURCE_DIR}/cpp/tests/make_hostile_images.py" ${_o}/hostile)
set_tests_properties(cli.hostile_images PROPERTIES FIXTURES_SETUP hostile_images)
set(_b "${_o}/bad")
set(_ok_args --image ${_img} --out ${_o}/x.png)
ovss_expect(cli.hostile_abs_model 2 "^error: manifest model_file '.*' is an absolute path"
            ${_infer} --model ${_b}/abs_model ${_ok_args})
ovss_expect(cli.hostile_dotdot_model 2 "^error: manifest model_file '../dotdot_model/model.onnx' has a '..' component"
            ${_infer} --model ${_b}/dotdot_model ${_ok_args})
ovss_expect(cli.hostile_outside_link 2 "^error: manifest model_file 'model.onnx' resolves to .*outside the model folder"
            ${_infer} --model ${_b}/outside_link ${_ok_args})
ovss_expect(cli.hostile_gen_layout_ok 0 "\"classes_present\""
            ${_infer} --model ${_b}/gen_layout --image ${_img} --out ${_o}/gen_layout.png --threads 1)
ovss_expect(cli.hostile_empty_sha 2 "^error: manifest model_sha256 is empty"
            ${_infer} --model ${_b}/empty_sha ${_ok_args})
ovss_expect(cli.hostile_no_emb_sha 2 "^error: manifest has text_embeddings_file but no text_embeddings_sha256"
            ${_infer} --model ${_b}/no_emb_sha ${_ok_args})
ovss_expect(cli.hostile_float_size 2 "^error: manifest field 'preprocess.input_size' must hold integers"
            ${_infer} --model ${_b}/float_size ${_ok_args})
ovss_expect(cli.hostile_nan_std 2 "^error: .*manifest.json' is not valid JSON"
            ${_infer} --model ${_b}/nan_std ${_ok_args})
ovss_expect(cli.hostile_deep_json 2 "^error: .*manifest.json' nests JSON deeper than 32 levels"
            ${_infer} --model ${_b}/deep_json ${_ok_args})
ovss_expect(cli.hostile_stride_15 2 "^error: manifest preprocess.feature_stride 15 does not divide the input size"
            ${_infer} --model ${_b}/stride_15 ${_ok_args})
set(_vf ${_g}/folders/vit_fixed)
set(_h ${_o}/hostile)
ovss_expect(cli.hostile_png_bomb 2 "^error: image '.*bomb.png' is 20000x20000 = 400000000 pixels, over the limit of 50000000"
            ${_infer} --model ${_vf} --image ${_h}/bomb.png --out ${_o}/x.png)
ovss_expect(cli.hostile_png_header 2 "^error: image .* is 100000x100000 = 10000000000 pixels, over the limit"
            ${_infer} --model ${_vf} --image ${_h}/huge_header.png --out ${_o}/x.png)
ovss_expect(cli.hostile_jpeg_header 2 "^error: image .* is 60000x60000 = 3600000000 pixels, over the limit"
            ${_infer} --model ${_vf} --image ${_h}/huge_header.jpg --out ${_o}/x.png)
ovss_expect(cli.hostile_max_pixels_small 2 "^error: image .* over the limit of 1000 \\(--max-pixels N raises it"
            ${_infer} --model ${_vf} ${_ok_args} --max-pixels 1000)
ovss_expect(cli.hostile_max_pixels_bad 2 "error: --max-pixels must be an integer in \\[0, "
            ${_infer} --model ${_vf} ${_ok_args} --max-pixels lots)
ovss_expect(cli.hostile_max_pixels_off 0 "\"image_hw\":\\[300,410\\]"
            ${_infer} --model ${_vf} --image ${_img} --out ${_o}/x_nolimit.png --max-pixels 0 --threads 1)
ovss_expect(cli.hostile_out_is_dir 2 "^error: --out '.*' is an existing folder, not a file"
            ${_infer} --model ${_vf} --image ${_img} --out ${_b}/dir.png)
ovss_expect(cli.hostile_out_under_file 2 "^error: --out '.*x.png': '.*large_300x410.png' is not a folder"
            ${_infer} --model ${_vf} --image ${_img} --out ${_img}/x.png)
ovss_expect(cli.hostile_labels_out_dir 2 "^error: --labels-out '.*' is an existing folder"
            ${_infer} --model ${_vf} ${_ok_args} --labels-out ${_b}/dir.png)
ovss_expect(cli.hostile_out_suffix 2 "error: --out must end in an image suffix"
            ${_infer} --model ${_vf} --image ${_img} --out ${_o}/x.txt)
ovss_expect(cli.hostile_image_is_dir 2 "^error: image file .* is a folder, not an image"
            ${_infer} --model ${_vf} --image ${_o} --out ${_o}/x.png)
ovss_expect(cli.hostile_threads_0 2 "error: --threads must be an integer in \\[1, 256\\], got '0'"
            ${_infer} --model ${_vf} ${_ok_args} --threads 0)
ovss_expect(cli.hostile_threads_huge 2 "error: --threads must be an integer in \\[1, 256\\], got '100000'"
            ${_infer} --model ${_vf} ${_ok_args} --threads 100000)
ovss_expect(cli.hostile_repeat_0 2 "error: --repeat must be an integer in \\[1, 10000\\]"
            ${_infer} --model ${_vf} ${_ok_args} --repeat 0)
ovss_expect(cli.hostile_stride_text 2 "error: --stride must be an integer in \\[1, 65536\\], got '1.5'"
            ${_infer} --model ${_vf} ${_ok_args} --stride 1.5)
ovss_expect(cli.hostile_stride_windows 2 "error: a 300x410 image with stride 1 needs 14399 windows, over the limit"
            ${_infer} --model ${_vf} ${_ok_args} --stride 1 --mode slide --threads 1)
ovss_expect(cli.hostile_short_side 2 "error: --short-side must be an integer in \\[0, 65536\\]"
            ${_infer} --model ${_vf} ${_ok_args} --short-side -5)
ovss_expect(cli.hostile_alpha 2 "error: --alpha must be a number in"
            ${_infer} --model ${_vf} ${_ok_args} --alpha 2)
ovss_expect(cli.hostile_alpha_nan 2 "error: --alpha must be a number in"
            ${_infer} --model ${_vf} ${_ok_args} --alpha nan)
ovss_expect(camera.hostile_png_bomb 2 "error: image '.*bomb.png' is 20000x20000 = 400000000 pixels, over the limit"
            ${_camera} --model ${_vf} --source ${_h}/bomb.png --threads 1)
ovss_expect(camera.hostile_out_under_file 2 "^error: --out '.*': '.*large_300x410.png' is not a folder"
            ${_camera} --model ${_vf} --source ${_clip} --out ${_img}/x.mp4)
ovss_expect(camera.hostile_out_suffix 2 "error: --out must be a .mp4 / .avi video or a folder"
            ${_camera} --model ${_vf} --source ${_clip} --out ${_o}/x.png)
ovss_expect(camera.hostile_json_dir 2 "^error: --json '.*' is an existing folder, not a file"
            ${_camera} --model ${_vf} --source ${_clip} --json ${_o})
ovss_expect(camera.hostile_threads 2 "error: --threads must be an integer in \\[1, 256\\]"
            ${_camera} --model ${_vf} --source ${_clip} --threads 0)
ovss_expect(camera.hostile_queue 2 "error: --queue must be an integer in \\[1, 1024\\]"
            ${_camera} --model ${_vf} --source ${_clip} --queue 5000)
ovss_expect(camera.hostile_outside_link 2 "^error: manifest model_file 'model.onnx' resolves to .*outside"
            ${_camera} --model ${_b}/outside_link --source ${_clip})
set_tests_properties(cli.hostile_png_bomb cli.hostile_png_header cli.hostile_jpeg_header camera.hostile_png_bomb
                     PROPERTIES FIXTURES_REQUIRED "golden;bad_folders;hostile_images" TIMEOUT 20)
