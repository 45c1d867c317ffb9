"""One scorer per benchmark: scienceqa, textvqa (also ST-VQA, OCR-VQA, DocVQA), mme, pope,
llava_bench (teacher-judged) and world (the synthetic world's benchmark)."""
