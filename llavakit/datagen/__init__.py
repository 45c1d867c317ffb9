"""Training-data generation: LLaVA's teacher pipeline, stage-1 pairs and LLaVAR's OCR data.

Modules (imported directly, so that nothing here pulls in the `openai` client until needed):
`protocol` (the Teacher interface), `teacher` (the OpenAI-compatible LLM teacher), `cache`,
`prompts` (+ the `prompts/` folder), `coco` (contexts from COCO annotations), `answers` (parsing
teacher output), `journal` (resumable progress, atomic output), `llava` (the instruction-data
pipeline), `pretrain` (stage-1 records), `ocr` and `llavar` (text-rich images).
"""
