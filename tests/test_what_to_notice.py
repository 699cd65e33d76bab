"""The notebooks' closing "what to notice" is computed from the run's own numbers: each sentence changes with them."""

import pandas as pd


def _evaluation(split, model, shuffled, prior, detail):
    from medlib.experiments.common import Evaluation

    return Evaluation(split, model, shuffled, prior, {}, None, None, None, [], detail)


def _m(value, half=0.02):
    return {"rougeL": value, "rougeL_lo": value - half, "rougeL_hi": value + half,
            "closed_accuracy": value, "closed_accuracy_lo": value - half, "closed_accuracy_hi": value + half}


def test_medblip_says_what_ended_training_and_which_controls_it_clears():
    from medlib.experiments.medblip import what_to_notice

    trainable = {"trainable_params": 199360, "total_params": 1186880, "unfrozen_layers": [0, 1, 2, 14, 15]}
    conc = pd.DataFrame([{"question_type": "view", "distinct_predictions": 1, "top_prediction": "pa", "distinct_references": 2},
                         {"question_type": "presence", "distinct_predictions": 2, "top_prediction": "yes", "distinct_references": 2}])
    still = {"val_curve": [[100, 0.7], [200, 0.6]], "best_step": 200}
    text = what_to_notice(_evaluation("test", _m(0.66), _m(0.55), _m(0.65), {"concentration": conc}), still, trainable, 100)
    assert "199,360 of 1,186,880" in text and "[0, 1, 2, 14, 15]" in text
    assert "the budget, not a plateau" in text and "epoch 2.0" in text
    assert "+0.110 against the image-shuffled control (0.550; the intervals do not overlap)" in text
    assert "+0.010 against the question-string prior (0.650; the intervals overlap)" in text
    assert 'view ("pa"; the references have 2 answers)' in text and "presence" not in text.split("One answer")[1]
    stopped = {"val_curve": [[100, 0.6], [200, 0.7]], "best_step": 100}
    text = what_to_notice(_evaluation("val", _m(0.66), _m(0.55), _m(0.65), {"concentration": conc.iloc[1:]}), stopped, trainable, 100)
    assert "had stopped falling" in text and "on val" in text and "no question type" in text


def test_adaptation_reads_each_task_against_its_controls():
    from medlib.experiments.adaptation import what_to_notice

    def tasks(v):
        return {"vqa": {"rougeL": v}, "report": {"ce13_micro_f1": v / 2}, "grounding": {"iou_strict_variable": v / 4}}

    summary = {"model": tasks(0.8), "image-shuffled control": tasks(0.6), "text-only prior": tasks(0.9)}
    conc = pd.DataFrame([{"task": t, "items": 10, "distinct_answers": d, "top_answer_share": s}
                         for t, d, s in (("vqa", 4, 0.5), ("report", 1, 1.0), ("grounding", 7, 0.2))])
    text = what_to_notice(_evaluation("test", summary["model"], summary["image-shuffled control"], summary["text-only prior"],
                                      {"concentration": conc}))
    assert "VQA ROUGE-L: 0.800, +0.200 against its image-shuffled control and -0.100 against the text-only prior" in text
    assert "1 distinct answers for 10 test items, the most common 100%" in text
