"""Evaluation: one answer runner, one scorer per benchmark, the teacher as judge, reports.

The flow, for every benchmark:

    llavakit eval prepare ...   (ScienceQA, TextVQA, POPE, MME: official release → question JSONL)
    llavakit eval answer --model CKPT --questions Q.jsonl --image-folder DIR --out A.jsonl
    llavakit eval score TASK --questions Q.jsonl --answers A.jsonl --out results.json
    llavakit eval report results.json ... --out DIR      (report.md, report.png, report.json)

Modules: `files` (reading and matching question/answer files, writing results), `protocols`
(named scoring protocols; `official`, the reference implementation's decision on every item, is
every benchmark's default), `yesno` and `vqa_answers` (the official and lenient readers of
yes/no and short answers), `judge` (asking a teacher until its reply parses; the judge prompts
are data in `judge_prompts/`), `tasks/` (one scorer per benchmark; each module's docstring says
where to get the data, the file layouts it accepts and its protocols), `published` (the papers'
numbers and the protocol behind each), `report`, `conformance` (published tables reproduced
from released predictions). Data sets are never downloaded by llavakit.

Every scorer returns a result dict: `task`, `benchmark` (the name reports group by),
`protocol` and `protocol_reference` (which rules produced the numbers), `model_id`,
the file paths, `n_questions` / `n_answered` / `n_missing` / `missing_ids`, `metrics` (a flat
name → number mapping in %, or MME points; the first one is the headline), task-specific
breakdowns, optional `variants` (extra rows for the report, e.g. ScienceQA's ensemble) and
`items` (one record per question, for inspection).
"""
