"""Reproduce the paper's comparisons on data that runs here, and write ``docs/results.md``.

    python benchmarks/reproduce                       # full run: writes docs/results.md
    python benchmarks/reproduce --quick --out-dir /tmp/repro   # smoke run (CI)
    python benchmarks/reproduce --part segments       # the 2019 segment task: its section
    python benchmarks/reproduce --part segments --quick --out-dir /tmp/repro

How long a run took, on which machine and under what load, is in the page it writes (docs/
results.md for the full runs: "Wall time of the whole command", "Wall time of the part").

The full YouTube-8M frame-level set (1.5 TB) is not available here, so the comparisons run on
the synthetic frame-level set (``nextvlad.data.synth``, shortened 3x so that five epochs of every
model fit the budget) with the models scaled down (K and H divided by 4), and on the real
YouTube-8M 2018 video-level records in ``../shared/data/yt8m-2018-video-level/`` when present:

- Table 1: NetVLAD, NetVLAD_random, NetVLAD_small, NeXtVLAD with 32/16/8 groups and the
  mean-pool baseline, all with the same data, recipe and number of steps, over ``--seeds`` seeds;
  GAP, mAP, Hit@1 on held-out videos and the exact parameter counts.
- Fig. 6: training GAP (batch GAP, smoothed) and held-out GAP against steps, as a PNG and in
  TensorBoard logs (``tensorboard --logdir OUT/runs``).
- Tables 2 and 3: the 3-branch NeXtVLAD mixture with on-the-fly distillation (T = 3, λ = 9)
  against the same mixture without it (λ = 0), and each against a single branch of itself.
- The parameter counts of the paper's models at their real sizes (``nextvlad params``).
- Real data: ``video-logistic`` and ``video-moe`` trained on shards 0000-0049, evaluated on
  0050-0059 (the recipes of docs/real-data.md).

Every run is a ``nextvlad train`` command in a subprocess, followed for a mixture by a
``nextvlad eval --branch M`` of each branch, exactly as a user runs them, ``--jobs`` at a time
with ``--threads`` torch threads each; its log is ``OUT/runs/<row>/seed<k>.log``. Outputs:
``OUT/results.json``, ``OUT/runs/<row>/seed<k>/`` (run folders with TensorBoard events), and ``results.md`` + ``fig6_gap_vs_steps.png`` in
``--docs-dir`` (``docs/`` for the full run; the out dir for ``--quick``, so a smoke run never
overwrites the committed results). Matplotlib is optional (``pip install 'nextvlad[plots]'``):
without it the PNG is skipped and said so. The runs read their curves back with TensorBoard's own
reader (``tensorboard``, in the dev extra); ``--render-only`` does not need it.

The modules, in the order a run goes through them:

- ``plan``: the rows of the tables (scaled-down presets), the full and quick sizes, the jobs;
- ``runner``: the one job runner of both parts (`nextvlad` commands in subprocesses, a pool of
  threads that wait on them, costliest first), the machine and the commit;
- ``paper_runs``: the synthetic set, and one job's commands and what its run folder holds;
- ``summary``: spreads over seeds, mean curves, the paper's claims and their verdicts;
- ``markdown``: the one renderer of the page (paragraphs, tables, cells, the page's two parts);
- ``report``: the main sections' Markdown, tables and prose, in Python;
- ``plots``: the Fig. 6 PNG;
- ``cli``: the options and ``main``; ``--render-only`` redoes the page and the PNG from
  results.json.

``--part segments`` is a run of its own, with its own JSON (``OUT/segments.json``) and its own
section of results.md, between the comments ``<!-- segments:begin -->`` and
``<!-- segments:end -->``: it rewrites only that section, and the main run keeps it. It trains a
scaled NeXtVLAD and the 3-branch mixture on the video labels of a synthetic segment-rated set,
fine-tunes each on the rated segments (``nextvlad train --task segments --init-from``) and scores
all four with ``nextvlad eval --segments`` (MAP@100K), every step a ``nextvlad`` subprocess
of the same runner:

- ``segments``: its arms, sizes, commands, runs and summary;
- ``segments_report``: its section, with ``markdown``'s blocks, put into the page between the
  markers by ``markdown.write_page``.
"""
