"""Flags, --config files, the resolved config and flag-level errors (no models loaded)."""

from __future__ import annotations

import pytest
from lorabooth.trainer.args import (
    ConfigError,
    build_parser,
    config_dict,
    dumps_toml,
    parse_args,
)

# Every flag the issue (and PEFT's / diffusers' DreamBooth examples) promises.
PROMISED = """pretrained_model_name_or_path revision instance_data_dir instance_prompt class_data_dir class_prompt
with_prior_preservation prior_loss_weight num_class_images output_dir seed resolution center_crop train_text_encoder
train_batch_size sample_batch_size num_train_epochs max_train_steps checkpointing_steps checkpoints_total_limit
resume_from_checkpoint gradient_accumulation_steps gradient_checkpointing learning_rate scale_lr lr_scheduler
lr_warmup_steps lr_num_cycles lr_power use_8bit_adam adam_beta1 adam_beta2 adam_weight_decay adam_epsilon
max_grad_norm mixed_precision prior_generation_precision enable_xformers_memory_efficient_attention
validation_prompt num_validation_images validation_steps report_to logging_dir use_lora lora_r lora_alpha
lora_dropout lora_bias lora_text_encoder_r lora_text_encoder_alpha lora_text_encoder_dropout lora_text_encoder_bias
num_dataloader_workers pre_compute_text_embeddings snr_gamma noise_offset rank config""".split()

REQUIRED = ["--pretrained_model_name_or_path", "m", "--instance_data_dir", "d", "--instance_prompt", "a sks dog"]


def test_help_explains_every_promised_flag():
    parser = build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    missing = [f for f in PROMISED if f not in by_dest]
    assert not missing, missing
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and len(a.help or "") < 10]
    assert not undocumented, undocumented
    text = parser.format_help()
    for flag in PROMISED:
        assert f"--{flag}" in text


def test_peft_defaults_and_rank_alias():
    args = parse_args(REQUIRED)
    assert (args.lora_r, args.lora_alpha, args.lora_text_encoder_r) == (8, 32, 8)
    assert args.seed == 0  # a seed is always set, so every run is reproducible
    args = parse_args([*REQUIRED, "--rank", "4"])
    assert (args.lora_r, args.lora_alpha, args.lora_text_encoder_r, args.lora_text_encoder_alpha) == (4, 4, 4, 4)


def test_config_file_sets_flags_and_command_line_wins(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'pretrained_model_name_or_path = "m"\ninstance_data_dir = "d"\ninstance_prompt = "a sks dog"\n'
        "lora_r = 16\nlearning_rate = 0.001\nuse_lora = true\n"
    )
    args = parse_args(["--config", str(cfg), "--learning_rate", "0.5"])
    assert args.lora_r == 16 and args.use_lora is True
    assert args.learning_rate == 0.5


def test_config_unknown_key_is_named(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("lora_rank = 4\n")
    with pytest.raises(ConfigError, match="lora_rank"):
        parse_args(["--config", str(cfg), *REQUIRED])


def test_resolved_config_reproduces_the_run(tmp_path):
    args = parse_args([*REQUIRED, "--use_lora", "--instance_prompt", 'a "quoted" sks\\dog', "--snr_gamma", "5",
                       "--with_prior_preservation", "--class_prompt", "a dog", "--class_data_dir", "c"])
    path = tmp_path / "resolved.toml"
    path.write_text(dumps_toml(config_dict(args)))
    again = parse_args(["--config", str(path)])
    assert config_dict(again) == config_dict(args)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--with_prior_preservation", "--class_data_dir", "c"], "--class_prompt"),
        (["--with_prior_preservation", "--class_prompt", "a dog"], "--class_data_dir"),
        (["--train_text_encoder", "--pre_compute_text_embeddings"], "--pre_compute_text_embeddings"),
        (["--train_batch_size", "0"], "--train_batch_size"),
    ],
)
def test_bad_flag_combinations(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_args([*REQUIRED, *extra])


def test_missing_required_flag_is_named():
    with pytest.raises(ConfigError, match="--instance_prompt"):
        parse_args(REQUIRED[:4])
