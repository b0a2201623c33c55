"""The CPU-checkable parts of lpn_edge.runtime.cuda_kernels: source inlining, the cubin cache, compiler error
messages, nvcc and NVRTC (cuda-python) compiles for sm_75 / sm_87 / sm_90, launch plans against the compiled
kernels' parameter lists, and the Python plumbing (buffers, passes, streaming, running top-k) through a fake backend
that runs each kernel launch with numpy. Nothing here uses a GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_fakes import FakeBackend

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime import cuda_kernels as ck, matching, ring_pool

ARCHS = ("75", "87", "90")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def nvcc_or_skip() -> str:
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc is not on this machine")
    return nvcc


# --- source, cache key, cache path, error lines ----------------------------------------------------------------

@pytest.mark.parametrize("name,header", [("ring_pool", "ring_geometry.cuh"), ("topk", "topk_select.cuh")])
def test_kernel_source_inlines_the_header_with_line_markers(name, header):
    source = ck.kernel_source(name)
    original = (ck.KERNEL_DIR / f"{name}.cu").read_text().splitlines()
    assert '#include "' not in source
    assert f'#line 1 "{header}"' in source and source.count('#line 1 "half_float.cuh"') == 1  # nested, once
    # the header's text after its own include line, verbatim
    assert (ck.KERNEL_DIR / header).read_text().split('#include "half_float.cuh"\n')[1] in source
    lines = source.splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith('#line ') and f'"{name}.cu"' in line)
    resumed_at = int(lines[marker].split()[1])
    assert lines[marker + 1] == original[resumed_at - 1]  # the compiler's line numbers stay those of the .cu file


def test_unknown_kernel_is_one_clear_error():
    with pytest.raises(LpnEdgeError, match="no CUDA kernel source .*nope.cu; expected one of ring_pool, topk"):
        ck.kernel_source("nope")


def test_cache_key_depends_on_everything_that_is_compiled():
    base = ck.cache_key("src", "sm_87", "nvrtc", "12.6", ("--std=c++14",))
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert base == ck.cache_key("src", "sm_87", "nvrtc", "12.6", ("--std=c++14",))
    variants = [ck.cache_key("src2", "sm_87", "nvrtc", "12.6", ("--std=c++14",)),
                ck.cache_key("src", "sm_90", "nvrtc", "12.6", ("--std=c++14",)),
                ck.cache_key("src", "sm_87", "nvcc", "12.6", ("--std=c++14",)),
                ck.cache_key("src", "sm_87", "nvrtc", "11.4", ("--std=c++14",)),
                ck.cache_key("src", "sm_87", "nvrtc", "12.6", ())]
    assert len({base, *variants}) == 6


def test_cache_path_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ck.cache_path("ring_pool", "sm_87", "ab" * 32) == tmp_path / "xdg" / "lpn-edge" / "kernels" / \
        f"ring_pool-sm_87-{'ab' * 16}.cubin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ck.cache_dir() == tmp_path / "home" / ".cache" / "lpn-edge" / "kernels"


NVCC_LOG = """bad.cu(3): error: identifier "foo" is undefined
    x[0] = foo;
           ^

bad.cu(2): warning #177-D: variable "a" was declared but never referenced
    int a = 1;
        ^

1 error detected in the compilation of "bad.cu".
"""
NVRTC_LOG = """kernel.cu(12): warning #177-D: variable "unused" was declared but never referenced
kernel.cu(40): error: expected a ";"
      return x
              ^

1 error detected in the compilation of "kernel.cu".
\x00"""
PTXAS_LOG = (
    "ptxas info    : 0 bytes gmem\n"
    "ptxas error   : Entry function 'lpn_topk_merge' uses too much shared data (0x10000 bytes, 0xc000 max)\n"
)
GCC_LOG = (
    "bad2.cu:1:10: fatal error: nothere.cuh: No such file or directory\n"
    "    1 | #include \"nothere.cuh\"\ncompilation terminated.\n"
)


@pytest.mark.parametrize("log,expected", [
    (NVCC_LOG, 'bad.cu(3): error: identifier "foo" is undefined'),
    (NVRTC_LOG, 'kernel.cu(40): error: expected a ";"'),
    (PTXAS_LOG,
     "ptxas error   : Entry function 'lpn_topk_merge' uses too much shared data (0x10000 bytes, 0xc000 max)"),
    (GCC_LOG, "bad2.cu:1:10: fatal error: nothere.cuh: No such file or directory"),
    ('kernel.cu(1): catastrophic error: cannot open source file "x.cuh"',
     'kernel.cu(1): catastrophic error: cannot open source file "x.cuh"'),
    ("\n  something odd happened\nmore\n", "something odd happened"),
    ("", "no compiler output"),
])
def test_first_error_line(log, expected):
    assert ck.first_error_line(log) == expected


def test_compile_cached_compiles_once_per_arch_and_reads_the_cache(cache_home):
    calls = []

    def compile_fn(source, arch):
        calls.append(arch)
        return f"cubin for {arch}".encode()

    first = ck.compile_cached("ring_pool", "sm_87", "nvrtc", "12.6", (), compile_fn)
    again = ck.compile_cached("ring_pool", "sm_87", "nvrtc", "12.6", (), compile_fn)
    other = ck.compile_cached("ring_pool", "sm_90", "nvrtc", "12.6", (), compile_fn)
    assert (first, again, other) == (b"cubin for sm_87", b"cubin for sm_87", b"cubin for sm_90")
    assert calls == ["sm_87", "sm_90"]
    assert sorted(p.name.split("-")[1] for p in (cache_home / "lpn-edge" / "kernels").iterdir()) == ["sm_87", "sm_90"]


def test_compile_error_is_one_line_and_nothing_is_cached(cache_home):
    def compile_fn(source, arch):
        raise ck.CompileFailed(NVRTC_LOG)

    with pytest.raises(LpnEdgeError) as error:
        ck.compile_cached("topk", "sm_87", "nvrtc", "12.6", (), compile_fn)
    assert str(error.value) == (
        'cannot compile topk.cu for sm_87 with nvrtc (CUDA 12.6): kernel.cu(40): error: expected a ";"'
    )
    kernels = cache_home / "lpn-edge" / "kernels"
    assert not kernels.exists() or not any(kernels.iterdir())


def test_an_unwritable_cache_still_compiles(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert ck.compile_cached("topk", "sm_87", "nvrtc", "12.6", (), lambda s, a: b"image") == b"image"


# --- nvcc: the shipped sources compile for the target architectures ----------------------------------------------

@pytest.fixture(scope="module")
def ptx_entries(tmp_path_factory) -> dict[str, list[str]]:
    """Compile the inlined sources (what the runtime compiler gets) for sm_75, sm_87 and sm_90 with warnings as
    errors, then to PTX; returns {kernel: [PTX parameter types]}."""
    nvcc = nvcc_or_skip()
    out = tmp_path_factory.mktemp("nvcc")
    entries = {}
    for name in ("ring_pool", "topk"):
        source = out / f"{name}.cu"
        source.write_text(ck.kernel_source(name))
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
        result = subprocess.run([nvcc, "--fatbin", "-std=c++14", "-Werror", "all-warnings", *gencode, "-o",
                                 str(out / f"{name}.fatbin"), str(source)], check=False, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, ck.first_error_line(result.stderr) + "\n" + result.stderr
        result = subprocess.run([nvcc, "--ptx", "-std=c++14", "-arch=compute_75", "-o", str(out / f"{name}.ptx"),
                                 str(source)], check=False, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        ptx = (out / f"{name}.ptx").read_text()
        for match in re.finditer(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx):
            entries[match.group(1)] = re.findall(r"\.param\s+\.(\w+)", match.group(2))
    return entries


def test_kernels_compile_for_sm75_sm87_sm90(ptx_entries):
    expected = {f"lpn_ring_pool_{d}_{layout}" for d in ("f32", "f16") for layout in ("nchw", "nhwc")}
    expected |= {"lpn_heads_normalise", "lpn_topk_scores", "lpn_topk_segments", "lpn_topk_merge"}
    assert set(ptx_entries) == expected


PTX_TYPES = {np.dtype(np.uint64): {"u64", "b64", "s64"}, np.dtype(np.int64): {"u64", "b64", "s64"},
             np.dtype(np.int32): {"u32", "b32", "s32"}, np.dtype(np.float32): {"f32"}}


def check_plan(plan, ptx_entries):
    for launch in plan:
        params = ptx_entries[launch.kernel]
        assert len(params) == len(launch.args), launch.kernel
        for position, (arg, param) in enumerate(zip(launch.args, params)):
            assert param in PTX_TYPES[np.dtype(type(arg))], (launch.kernel, position, type(arg), param)
        assert launch.block == (ck.BLOCK, 1, 1) and all(g >= 1 for g in launch.grid)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("pool", ["avg", "max", "avg+max"])
def test_ring_pool_plan_matches_the_kernel_parameters(ptx_entries, layout, dtype, pool):
    plan = ck.ring_pool_plan(0x1000, 0, 0x2000, 0x3000, 0x4000, 0x5000, batch=64, channels=2048, height=16,
                             width=16, parts=4, bottleneck=512, kind="ring", pool=pool, dtype=dtype, layout=layout,
                             bias_scale=2.0)
    check_plan(plan, ptx_entries)
    pool_launch, heads = plan
    assert pool_launch.kernel == f"lpn_ring_pool_{dtype}_{layout}"
    assert pool_launch.grid == ((64 * 2048 + 7) // 8 if layout == "nchw" else 64 * 2048 // 256, 1, 1)
    assert heads.grid == (4, 64, 1)
    assert int(heads.args[5]) == (4096 if pool == "avg+max" else 2048)


def test_topk_plan_matches_the_kernel_parameters(ptx_entries):
    plan = ck.topk_plan(1, 2, 3, 4, 5, 6, 7, num_queries=3, rows=20000, dim=2048, k=10, index_offset=1 << 33,
                        has_running=True)
    check_plan(plan, ptx_entries)
    assert [launch.grid for launch in plan] == [(20000 * 32 // 256, 1, 1), (3, 3, 1), (3, 1, 1)]
    assert int(plan[1].args[5]) == 1 << 33 and int(plan[2].args[3]) == 3 * 10


def test_plans_refuse_what_the_kernels_cannot_do():
    with pytest.raises(LpnEdgeError, match="1 <= k <= 64"):
        ck.topk_plan(1, 2, 3, 4, 5, 6, 7, num_queries=1, rows=10, dim=4, k=65, index_offset=0, has_running=False)
    with pytest.raises(LpnEdgeError, match="dtype must be one of f32, f16"):
        ck.ring_pool_plan(1, 0, 2, 3, 4, 5, batch=1, channels=1, height=1, width=1, parts=1, bottleneck=1,
                          kind="ring", pool="avg", dtype="bf16", layout="nchw", bias_scale=1.0)


def test_nvcc_compile_error_becomes_one_line(cache_home, tmp_path):
    nvcc = nvcc_or_skip()

    def compile_fn(source, arch):  # what pycuda.compiler.compile does: nvcc --cubin
        path = tmp_path / "kernel.cu"
        path.write_text(source.replace("acc.sum += v;", "acc.sum += undefined_name;"))
        result = subprocess.run([nvcc, "--cubin", f"-arch={arch}", "-o", str(tmp_path / "k.cubin"), str(path)],
                                check=False, capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise ck.CompileFailed(result.stderr)
        return (tmp_path / "k.cubin").read_bytes()

    with pytest.raises(LpnEdgeError,
                       match=r'^cannot compile ring_pool.cu for sm_90 with nvcc \(CUDA 13\): '
                             r'ring_geometry.cuh\(\d+\): error: identifier "undefined_name" is undefined$'):
        ck.compile_cached("ring_pool", "sm_90", "nvcc", "13", (), compile_fn)


# --- Python plumbing through a fake backend that runs the kernels with numpy -------------------------------------

@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("pool", ["avg", "max", "avg+max"])
def test_ring_pool_kernel_plumbing(layout, pool):
    generator = np.random.default_rng(0)
    channels, parts, bottleneck = 6, 3, 5
    in_channels = 2 * channels if pool == "avg+max" else channels
    weight = generator.standard_normal((parts, bottleneck, in_channels)).astype(np.float32)
    bias = generator.standard_normal((parts, bottleneck)).astype(np.float32)
    kernel = ck.RingPoolKernel(weight, bias, 2.0, kind="ring_outer_first", pool=pool, backend=FakeBackend())
    maps = generator.random((2, 3, channels, 5, 7)).astype(np.float16)
    if layout == "nhwc":
        maps = maps.transpose(0, 1, 3, 4, 2)
    embedding, pooled = kernel.pool_and_embed(maps[0], maps[1], layout=layout, return_pooled=True)
    expected_pooled = ring_pool.pool_parts(maps[0], parts, "ring_outer_first", pool, layout, maps[1])
    assert np.array_equal(pooled, expected_pooled)
    assert np.array_equal(embedding, ring_pool.embed_pooled(expected_pooled, weight, bias, 2.0))
    with pytest.raises(LpnEdgeError, match="feature map has 7 channels; these heads expect 6"):
        kernel.pool_and_embed(np.zeros((1, 7, 4, 4), np.float32))
    memory = kernel.backend.memory  # every buffer went through the one memory layer, and close returns them all
    assert memory.live[0] >= 5  # heads weight and bias, map, mirror, pooled, embedding
    kernel.close()
    kernel.close()  # twice: nothing freed twice
    assert memory.live == (0, 0)


@pytest.mark.parametrize("resident", [True, False])
def test_gpu_matcher_plumbing_resident_and_streamed(resident, monkeypatch):
    monkeypatch.setattr(ck, "TOPK_SEGMENT", 50)
    generator = np.random.default_rng(1)
    gallery = generator.integers(-2, 3, (1000, 8)).astype(np.float16)
    queries = generator.integers(-2, 3, (3, 8)).astype(np.float32)
    budget = None if resident else 300 * 8 * 2  # 300 rows on the device: four streamed passes
    matcher = ck.GpuMatcher(gallery, max_device_bytes=budget, score_rows=3000, backend=FakeBackend())
    assert matcher.resident is resident
    assert matcher.passes(3) == ([(0, 1000)] if resident else [(0, 300), (300, 300), (600, 300), (900, 100)])
    assert matcher.passes(10) == [(0, 300), (300, 300), (600, 300), (900, 100)]  # score scratch bounds the pass
    for k in (1, 10, 64):
        indices, scores = matcher.search(queries, k)
        expected = matching.exact_topk(queries, gallery, k)
        assert np.array_equal(indices, expected[0]) and np.array_equal(scores, expected[1])
    with pytest.raises(LpnEdgeError, match="1 <= k <= min"):
        matcher.search(queries, 65)
    matcher.close()
    assert matcher.backend.memory.live == (0, 0)


# --- NVRTC (cuda-python's runtime compiler, the drone's path without pycuda): needs no GPU -------------------------

def nvrtc_or_skip() -> None:
    try:
        ck.nvrtc_version()
    except Exception as error:  # noqa: BLE001 - ImportError, a missing libnvrtc, ...
        pytest.skip(f"cuda-python's NVRTC is not usable here ({type(error).__name__}: {error})")


@pytest.mark.parametrize("arch", [f"sm_{a}" for a in ARCHS])
def test_nvrtc_compiles_the_shipped_sources(arch, cache_home):
    nvrtc_or_skip()
    version = ck.nvrtc_version()
    for name, kernels in (("ring_pool", ["lpn_ring_pool_f16_nhwc", "lpn_heads_normalise"]),
                          ("topk", ["lpn_topk_scores", "lpn_topk_segments", "lpn_topk_merge"])):
        image = ck.compile_cached(name, arch, "nvrtc", version, ("--std=c++14",),
                                  lambda source, a: ck.nvrtc_compile(source, a))
        assert image[:4] == b"\x7fELF" and all(kernel.encode() in image for kernel in kernels)
        assert ck.cache_path(name, arch, ck.cache_key(ck.kernel_source(name), arch, "nvrtc", version,
                                                      ("--std=c++14",))).read_bytes() == image


def test_nvrtc_compile_error_becomes_one_line(cache_home, monkeypatch):
    nvrtc_or_skip()
    broken = ck.kernel_source("topk").replace("acc += lpn_half_to_float(row[d]) * query[d];",
                                              "acc += lpn_half_to_float(row[d]) * querry[d];")
    monkeypatch.setattr(ck, "kernel_source", lambda name: broken)
    with pytest.raises(LpnEdgeError, match=r'^cannot compile topk.cu for sm_87 with nvrtc \(CUDA [0-9.]+\): '
                                           r'topk_select.cuh\(\d+\): error: identifier "querry" is undefined$'):
        ck.compile_cached("topk", "sm_87", "nvrtc", ck.nvrtc_version(), (), ck.nvrtc_compile)
