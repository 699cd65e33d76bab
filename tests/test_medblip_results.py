import pandas as pd

from medlib.experiments import medblip_results as res


def test_degenerate_answers_are_counted_per_run_not_on_the_mean():
    """Two runs answer every location question "right lower lung", a third varies: the mean share (0.9) is
    under the threshold, but two runs of three are degenerate and are named."""
    rows = [{"question_type": "location", "top_prediction": a, "top_prediction_share": share, "top_reference_share": 0.25}
            for a, share in [("right lower lung", 1.0), ("right lower lung", 1.0), ("left lower lung", 0.70)]]
    rows += [{"question_type": "view", "top_prediction": "PA", "top_prediction_share": 1.0, "top_reference_share": 0.81}] * 3
    rows += [{"question_type": "presence", "top_prediction": "yes", "top_prediction_share": 0.6, "top_reference_share": 0.5}] * 3
    stuck = res.degenerate(pd.DataFrame(rows))
    assert stuck.to_dict("records") == [{"question_type": "location", "runs": 2, "of_runs": 3, "answer": "right lower lung",
                                         "reference_share": 0.25}]  # view: its references are as concentrated
    assert res.degenerate(pd.DataFrame(rows[6:])).empty
    # an empty answer (read back from CSV as NaN) for every image is degenerate too, and named as ""
    empty = [{"question_type": "level", "top_prediction": float("nan"), "top_prediction_share": 1.0, "top_reference_share": 0.4}]
    assert res.degenerate(pd.DataFrame(empty)).answer.tolist() == [""]
