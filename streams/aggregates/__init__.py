"""The streaming feature aggregates (`convcg aggregates`): the windows (`windows`), their
settings (`settings`), a user's engagement sequence (`sequence`), one stage partition
(`stage`), its changelog records (`changelog`) and the worker (`worker`)."""
