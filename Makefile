# The two commands of the README. Both create the environment on a fresh machine:
# a virtualenv, torch==2.13.0 first (a CPU wheel here; unpinned torch pulls GBs of CUDA), then the package, whose
# install_requires bring the face detection: dlib-bin (prebuilt dlib wheels) and face-recognition-models (its model
# files), about 15 s from the registry.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clef-hf-installed

.PHONY: demo test study bench bench-gpu guarantees install clean demo-fixture

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py --output_dir outputs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# After `make demo`: copy its saved AU model (weights, config, processor and tokenizer; 3 MB) and the job's options
# into tests/fixtures/demo_au_model, the trained model tests/test_explain.py measures the relevancy maps on. A test
# fails while the fixture's options differ from MainJobOptions' or the recipe's: refresh it when they change.
DEMO_FIXTURE := tests/fixtures/demo_au_model
demo-fixture:
	mkdir -p $(DEMO_FIXTURE)
	for name in config.json model.safetensors processor_config.json tokenizer.json tokenizer_config.json \
		training_args.json eval_results.json; do cp outputs/demo/au-model/$$name $(DEMO_FIXTURE)/; done
	$(PY) -c "import json; options = json.load(open('outputs/demo/results.json'))['options']; \
		json.dump(options, open('$(DEMO_FIXTURE)/main_job_options.json', 'w'), indent=1)"

# The ablation study of the README (Table 6 on the synthetic faces, with EmoCo, self-supervised pre-training and
# CL-ILE), 3 seeds, each with its own stage 0. Measured parts on 2 cores: one seed from a given stage 0, 17 minutes;
# one stage 0, 5-6 minutes. An interrupted study resumes where it stopped.
study: $(STAMP)
	HF_HUB_OFFLINE=1 PYTHONPATH=. $(PY) scripts/ablation_study.py --output_dir outputs/study

# Every benchmark, each writing its results to benchmarks/results/; on a machine
# where torch sees CUDA, the GPU runs of benchmarks/gpu.sh follow (benchmarks/results/gpu_*.json).
BENCH := HF_HUB_OFFLINE=1 PYTHONPATH=. $(PY)
bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BENCH) benchmarks/inference_vs_alternatives.py --zero_shot_single --output benchmarks/results/inference_vs_alternatives.json
	$(BENCH) benchmarks/pipeline_speed.py --output benchmarks/results/pipeline_speed.json
	$(BENCH) benchmarks/scaling.py --output benchmarks/results/scaling.json
	$(BENCH) benchmarks/training_loop_overhead.py --cpu --output benchmarks/results/training_loop_overhead.json
	$(BENCH) benchmarks/data_loading.py --cpu --output benchmarks/results/data_loading.json
	$(BENCH) benchmarks/pretraining_memory.py --cpu --output benchmarks/results/pretraining_memory.json
	$(BENCH) benchmarks/builder_throughput.py --frames 100 > benchmarks/results/builder_throughput.txt
	$(BENCH) benchmarks/face_detection.py --output benchmarks/results/face_detection.json
	$(BENCH) benchmarks/face_tracking.py --output benchmarks/results/face_tracking.json
	$(BENCH) benchmarks/face_tracking.py --frames 60 --output benchmarks/results/face_tracking_fast.json
	$(BENCH) -m benchmarks.synthfaces_learnability --samples "" --output benchmarks/results/synthfaces_learnability.json
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then PY=$(PY) sh benchmarks/gpu.sh; fi

bench-gpu: $(STAMP)
	PY=$(PY) sh benchmarks/gpu.sh

# The robustness guarantees of docs/guarantees.md (also part of `make test`).
GUARANTEES := tests/test_hardening_kill.py tests/test_hardening_inputs.py tests/test_hardening_loading.py \
	tests/test_processing.py::test_loaded_processors_keep_the_pillow_backend \
	tests/test_processing.py::test_a_torchvision_clip_image_processor_is_rebuilt_on_pillow \
	tests/test_faces.py::test_an_opencv_without_haar_cascades_is_named_with_the_fix \
	tests/test_faces.py::test_a_missing_dlib_is_named_with_the_pip_command \
	tests/test_faces.py::test_missing_model_files_are_named_with_the_pip_command \
	tests/test_faces.py::test_detectors_refuse_arrays_dlib_cannot_take_with_a_clear_error
guarantees: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(GUARANTEES)

clean:
	rm -rf $(VENV) outputs .pytest_cache
