"""recsys.training.perf: the malloc tuning of CPU training processes; when to compile the tower."""

import platform
import resource
import subprocess
import sys
import textwrap

import pytest
import torch
import torch._inductor.config as inductor_config

from recsys.training.perf import compile_unavailable, use_compile

glibc_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)

# Fresh process: malloc a 24 MB block, write it, free it, three times; prints the minor page
# faults of each round. A block that glibc keeps after free() is reused without faults.
# Transparent huge pages are switched off for the process first (PR_SET_THP_DISABLE): where
# they are on by default (RHEL, Fedora) a fresh 24 MB block would fault in 2 MB at a time, a
# dozen faults instead of thousands, and the counts would say nothing about reuse.
_ROUNDS = textwrap.dedent("""
    import ctypes, resource, sys
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_THP_DISABLE = 41
    zero = ctypes.c_ulong(0)
    if libc.prctl(PR_SET_THP_DISABLE, ctypes.c_ulong(1), zero, zero, zero) != 0:
        sys.exit(f"prctl(PR_SET_THP_DISABLE) failed: errno {ctypes.get_errno()}")
    if sys.argv[1] == "tuned":
        from recsys.training.perf import keep_freed_memory
        assert keep_freed_memory() is True
    libc.malloc.restype = ctypes.c_void_p
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 24_000_000, []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(size)
        libc.memset(p, 1, size)
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
""")


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True,
                         check=True).stdout
    return [int(x) for x in out.split()]


@glibc_linux
def test_keep_freed_memory_makes_freed_blocks_reusable_without_page_faults() -> None:
    pages = 24_000_000 // resource.getpagesize()
    default, tuned = _faults("default"), _faults("tuned")
    # Untuned, glibc serves the first block with mmap and returns it on free(); the second
    # comes from a heap grown for it. Either way fresh pages are faulted in again.
    assert default[0] > pages // 2 and default[1] > pages // 2
    # Tuned, the first block comes from the heap and stays there after free(): the later
    # rounds write the same pages again without faulting.
    assert tuned[0] > pages // 2
    assert tuned[1] < 100 and tuned[2] < 100


CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_use_compile_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert use_compile("off", CPU)[0] is False
    if compile_unavailable(CPU) is None:  # this machine has a C++ compiler (CI does)
        assert use_compile("auto", CPU)[0] is True
        assert use_compile("on", CPU)[0] is True
    # "auto" keeps CUDA eager (the gain is measured on CPU only); "on" needs Triton there.
    compiled, why = use_compile("auto", CUDA)
    assert compiled is False and "eager" in why
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    missing = compile_unavailable(CPU)
    assert missing is not None and "C++ compiler" in missing
    compiled, why = use_compile("auto", CPU)
    assert compiled is False and "C++ compiler" in why
    with pytest.raises(ValueError, match='train.compile = "on" but Inductor found no C'):
        use_compile("on", CPU)
    assert compile_unavailable(torch.device("meta")) is not None


@glibc_linux
def test_malloc_tuning_is_left_alone_when_the_environment_says_off(monkeypatch) -> None:
    from recsys.training.perf import MALLOC_TUNING_ENV, keep_freed_memory

    monkeypatch.setenv(MALLOC_TUNING_ENV, "off")
    assert keep_freed_memory() is False
