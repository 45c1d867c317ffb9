import dataclasses

from llavakit.demo.pipeline import stage_sources
from llavakit.demo.sizes import DEFAULT


def test_llavar_data_goes_to_both_stages_and_only_with_text_rich():
    stage1, stage2 = stage_sources(DEFAULT)
    assert stage1 == ["pretrain", "noisy"]
    assert {"llavar", "noisy"} <= set(stage2) and stage2[0] == "instruct"
    without1, without2 = stage_sources(DEFAULT, text_rich=False)
    assert without1 == ["pretrain"] and without2 == [
        s for s in stage2 if s not in ("llavar", "noisy")
    ]


def test_short_answer_vqa_joins_stage_two_only_when_asked():
    assert "vqa" not in stage_sources(dataclasses.replace(DEFAULT, stage2_vqa=False))[1]
    stage1, stage2 = stage_sources(dataclasses.replace(DEFAULT, stage2_vqa=True))
    assert "vqa" in stage2 and "vqa" not in stage1
