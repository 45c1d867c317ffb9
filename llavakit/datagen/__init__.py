"""Training-data generation: LLaVA's teacher pipeline, stage-1 pairs and LLaVAR's OCR data.

Modules (imported directly, so that nothing here pulls in the `openai` client until needed):
`teacher` (the OpenAI-compatible LLM teacher; the interface it shares with the world's symbolic
teacher is `llavakit.teacher_protocol`), `cache`, `prompts` (+ the `prompts/` folder), `coco`
(contexts from COCO annotations), `answers` (parsing teacher output), `journal` (resumable
progress, atomic output), `llava` (the instruction-data pipeline), `pretrain` (stage-1 records),
`ocr/` (engines and paragraph layout) and `llavar/` (LLaVAR's text-rich pipeline).
"""
