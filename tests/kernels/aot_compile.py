"""Compile every Triton kernel of ``hymba.kernels`` ahead of time for an H100/H200 (sm_90) on a machine without
a GPU: Triton's own compiler and ptxas, down to a cubin, with each kernel's constexpr flags all on and all off.
The interpreter that runs the kernels on CPU (``TRITON_INTERPRET=1``) accepts code the compiler rejects; this
catches that in CI. Run as a script (the interpreter must be off): prints one line per compile, exits 1 on
any failure. Argument types follow the parameter names (positions int64, masks uint8, partial sums fp32).
``--scan-forward-async-copies``: only whether the chunked scan forward's loads are pipelined (exit 1 if not)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

MODULES = [
    "hymba.kernels.attention.triton_decode",
    "hymba.kernels.attention.triton_rope",
    "hymba.kernels.norm.triton",
    "hymba.kernels.scan.triton",
    "hymba.kernels.scan.triton_conv",
    "hymba.kernels.scan.triton_step",
]
# the sizes each module launches its kernels with (a representative setting of the model's shapes)
SIZES = {
    "triton_decode": dict(GP=16, DKP=64, DVP=128, BLOCK=64),
    "triton_rope": dict(BLOCK=32, TOKENS=32),
    "triton": dict(BLOCK=16, NP=16, CH=64, UNROLL=4, STAGES=2),  # the scan (STAGES 2: its loops pipelined)
    "triton_conv": dict(K=4, BT=32, BD=128),
    "triton_step": dict(BLOCK=32, NP=16, KP=4),
}
NORM_SIZES = dict(BLOCK=1024)  # hymba.kernels.norm.triton (module name "triton" too)
FP32 = {"m_ptr", "l_ptr", "o_ptr", "scratch_ptr", "chk_ptr", "loc_ptr", "dtsum_ptr", "starts_ptr", "end_ptr"}
FP32 |= {"init_ptr", "last_ptr", "h0_ptr", "A_ptr", "D_ptr", "bias_ptr", "state_ptr", "carry_ptr", "g_ptr"}
FP32_PREFIXES = ("d",)  # gradients: du_ptr, dA_ptr, ... (dt_ptr and dout_ptr are inputs)
INPUTS = {"dt_ptr", "dout_ptr", "dlast_ptr"}
FLOATS = {"eps", "scale"}


def _ptr_type(name: str, module: str) -> str:
    if "pos" in name:
        return "*i64"
    if name in ("valid_ptr", "meta_ptr"):
        return "*u8"
    if module.endswith("scan.triton") or module.endswith("triton_step"):
        if name in FP32 or (name.startswith(FP32_PREFIXES) and name not in INPUTS):
            return "*fp32"
    elif name in ("m_ptr", "l_ptr", "o_ptr") or (
        module.endswith("triton_conv") and name in ("g_ptr", "dw_ptr", "db_ptr")
    ):
        return "*fp32"
    return "*bf16"


def kernels():
    for m in MODULES:
        mod = importlib.import_module(m)
        sizes = NORM_SIZES if m.endswith("norm.triton") else SIZES[m.split(".")[-1]]
        for name, fn in vars(mod).items():
            if isinstance(fn, triton.runtime.jit.JITFunction) and name.endswith("_kernel"):
                yield m, name, fn, sizes


# the channel strides the model's [B, L, D] layout gives the scan (1: Triton specialises them as constants)
UNIT_STRIDES = {"s_ud", "s_td", "s_zd", "s_od", "s_Bn", "s_Cn"}


def compile_one(m: str, fn, sizes: dict, flag: bool, launched: bool = False, num_warps: int = 4):
    """``fn`` compiled for sm_90 with ``sizes`` and every other constexpr flag ``flag``. ``launched``: specialised
    as the runtime specialises a launch from the model (16-byte aligned pointers, integers divisible by 16, the
    scan's channel strides 1), so the compile is the one a GPU would run."""
    sig, consts, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            consts[p.name] = sizes[p.name] if p.name in sizes else flag
        elif launched and p.name in UNIT_STRIDES:
            sig[p.name], consts[p.name] = "constexpr", 1
        else:
            if p.name.endswith("_ptr"):
                sig[p.name] = _ptr_type(p.name, m)
            else:
                sig[p.name] = "fp32" if p.name in FLOATS else "i32"
            if launched and sig[p.name] != "fp32":
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))


def scan_forward_async_copies() -> int:
    """``cp.async`` instructions in the chunked scan forward's final pass at the module's default settings, as
    launched from the model: the time loop's loads pipelined (``CHUNKED_FWD_STAGES``) give some, an unpipelined
    loop none."""
    from hymba.kernels.scan import triton as scan

    sizes = dict(SIZES["triton"], CH=scan.CHUNK, UNROLL=scan.UNROLL)
    sizes.update(BLOCK=scan.CHUNKED_FWD_BLOCK_D, STAGES=scan.CHUNKED_FWD_STAGES)
    k = compile_one(scan.__name__, scan._fwd_chunk_kernel, sizes, True, True, scan.CHUNKED_FWD_WARPS)
    return k.asm["ptx"].count("cp.async.")


def main() -> int:
    if sys.argv[1:] == ["--scan-forward-async-copies"]:
        n = scan_forward_async_copies()
        print(f"cp.async in the chunked scan forward: {n}")
        return 0 if n else 1
    failed = 0
    for m, name, fn, sizes in kernels():
        for flag in (True, False):
            try:
                compile_one(m, fn, sizes, flag)
                print(f"ok     {m}.{name} flags={flag}", flush=True)
            except Exception:
                failed += 1
                print(f"FAILED {m}.{name} flags={flag}\n{traceback.format_exc()[-2000:]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
