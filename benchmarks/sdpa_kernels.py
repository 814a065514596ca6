"""CPU SDPA kernels by dtype at SmolLM2's shapes (9 query / 3 KV heads, head dim 64): the figures behind
finetune/speed/attention.py's FP32_ON_CPU and finetune/eval/grouped.py.

    python benchmarks/sdpa_kernels.py

Part 1, training: one example of L tokens, causal, forward + backward, flash and math kernels, fp32 and
bf16, and bf16 inputs computed in fp32 (best of 10, ms). Part 2, decoding: 128 slots, one query each over a
strided view of the slot buffer with a boolean mask: SDPA vs grouped matmuls (eager semantics), fp32 and
bf16 (median of 30, ms), with the bf16 variants' max error against fp32 SDPA. Nothing is written.
Measured 2026-12-08 on a 2-core AMD EPYC with AVX512-BF16 (no AMX).
"""

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.manual_seed(0)


print('training: forward + backward, ms')
def t(fn, n=10):
    fn(); best=9
    for _ in range(n):
        t0=time.perf_counter(); fn(); best=min(best,time.perf_counter()-t0)
    return best*1e3
for L in (100, 225, 400):
  row={}
  for dt in (torch.float32, torch.bfloat16):
    q=torch.randn(1,L,9,64,dtype=dt).transpose(1,2).requires_grad_(); k=torch.randn(1,L,3,64,dtype=dt).transpose(1,2).requires_grad_(); v=torch.randn(1,L,3,64,dtype=dt).transpose(1,2).requires_grad_()
    for name,be in (("flash",SDPBackend.FLASH_ATTENTION),("math",SDPBackend.MATH)):
      def fb():
        with sdpa_kernel(be):
          o=F.scaled_dot_product_attention(q,k,v,is_causal=True,enable_gqa=True)
        o.sum().backward()
      row[f"{name}_{str(dt)[6:]}"]=round(t(fb),2)
  # bf16 inputs, computed in fp32 (cast in, cast out)
  q=torch.randn(1,L,9,64,dtype=torch.bfloat16).transpose(1,2).requires_grad_(); k=torch.randn(1,L,3,64,dtype=torch.bfloat16).transpose(1,2).requires_grad_(); v=torch.randn(1,L,3,64,dtype=torch.bfloat16).transpose(1,2).requires_grad_()
  def fb32():
    o=F.scaled_dot_product_attention(q.float(),k.float(),v.float(),is_causal=True,enable_gqa=True)
    o.to(torch.bfloat16).sum().backward()
  row["bf16_in_fp32_flash"]=round(t(fb32),2)
  print(L,row)

print('decoding: one query per slot, 128 slots, ms')
def t_median(fn, n=30):
    fn(); fn(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); fn(); ts.append(time.perf_counter()-t0)
    ts.sort(); return round(ts[len(ts)//2]*1e3,2)
R, cap = 128, 430
def manual(q,k,v,mask,dt):
    B,H,_,d=q.shape; KV=k.shape[1]
    qq=q.reshape(B,KV,H//KV,d)
    s=torch.matmul(qq, k.transpose(-1,-2)).float()*0.125
    s=s.masked_fill(~mask, float('-inf')).softmax(-1).to(dt)
    return torch.matmul(s, v)
for W in (150, 300, 430):
  row={}
  for dt in (torch.float32, torch.bfloat16):
    kb=torch.randn(R,3,cap,64,dtype=dt); vb=torch.randn(R,3,cap,64,dtype=dt)
    q=torch.randn(R,1,9,64,dtype=dt).transpose(1,2)
    pos=torch.randint(W//2, W, (R,)); pos[0]=W-1
    mask=(torch.arange(W)[None,:] <= pos[:,None])[:,None,None]
    k,v=kb[:,:,:W],vb[:,:,:W]
    n=str(dt)[6:]
    row["sdpa_"+n]=t_median(lambda: F.scaled_dot_product_attention(q,k,v,attn_mask=mask,enable_gqa=True))
    row["manual_"+n]=t_median(lambda: manual(q,k,v,mask,dt))
    if dt==torch.bfloat16:
      ref=F.scaled_dot_product_attention(q.float(),k.float(),v.float(),attn_mask=mask,enable_gqa=True)
      a=F.scaled_dot_product_attention(q,k,v,attn_mask=mask,enable_gqa=True).float()
      b=manual(q,k,v,mask,dt).float().reshape(R,9,1,64)
      row["err_sdpa"]=round(float((a-ref).abs().max()),4); row["err_manual"]=round(float((b-ref).abs().max()),4)
  print(W,row, flush=True)
