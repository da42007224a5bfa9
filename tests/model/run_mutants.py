"""Manual check (not collected by pytest): each mutant of the SANA-WM maths must make a model test fail.

Run from the repo root: ``.venv/bin/python tests/model/run_mutants.py``. It patches one source line at a
time, runs the model tests, prints which test caught it and restores the file.
"""
import pathlib
import subprocess

M = [
 ("key scale 0", "model/layers/self_attention.py", "scale = (self.Dh * S) ** -0.5", "scale = 0.0 * (self.Dh * S) ** -0.5"),
 ("chunk-causal without in-chunk reverse scan", "model/ops/gdn.py", "    for start, stop in segment_bounds(F, mode, chunk_lens):", "    for start, stop in ([] if mode == 'chunk_causal' else segment_bounds(F, mode, chunk_lens)):"),
 ("bidirectional silently causal", "model/ops/gdn.py", "    states = states + torch.stack(rev_states, dim=2)", "    states = states + (0 * torch.stack(rev_states, dim=2) if mode == 'bidirectional' else torch.stack(rev_states, dim=2))"),
 ("camera branch output dropped", "model/layers/self_attention.py", "            out = out + self.out_proj_cam(self._merge(cam))", "            out = out + 0 * self.out_proj_cam(self._merge(cam))"),
 ("Plücker branch dropped", "model/layers/block.py", "            x = x + self.plucker_proj(plucker)", "            x = x + 0 * self.plucker_proj(plucker)"),
 ("RoPE on the normaliser stream", "model/layers/self_attention.py", "        den, den_s = self.scan(q.to(work), k.to(work), ones,", "        den, den_s = self.scan(q_rot.to(work), k_rot.to(work), ones,"),
 ("softmax blocks moved by one", "model/interop.py", "        softmax_blocks=tuple(i for i in range(L) if n > 0 and (i + 1) % n == 0),", "        softmax_blocks=tuple(i for i in range(L) if n > 0 and (i + 2) % n == 0),"),
]
tests = ["tests/model/test_parity.py", "tests/model/test_network.py", "tests/model/test_gdn_ops.py"]
for name, f, old, new in M:
    p = pathlib.Path(f); s = p.read_text()
    assert old in s, (name, old)
    p.write_text(s.replace(old, new, 1))
    try:
        r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        last = [l for l in r.stdout.splitlines() if l.strip()][-1]
        failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
        print(f"{name}: rc={r.returncode} {last} {failed[:1]}")
    finally:
        p.write_text(s)
