from lorabooth.world.tokenizer import MODEL_MAX_LENGTH, RARE_TOKENS, build_tokenizer, world_words


def test_round_trip_and_world_words_are_single_tokens(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "vocab.json").exists() and (tmp_path / "tok" / "merges.txt").exists()
    for text in ["a photo of sks star", "a photo of a purple checkered star on a striped blue background",
                 "an unseen word: zebra-42, ünïcode ☆"]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    for word in world_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    assert set(RARE_TOKENS) <= set(world_words())


def test_pads_to_77_like_stable_diffusion(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    assert tok.model_max_length == MODEL_MAX_LENGTH == 77
    out = tok(["a red star", ""], padding="max_length", max_length=tok.model_max_length, truncation=True)
    assert [len(x) for x in out.input_ids] == [77, 77]
    # Every byte is in the vocabulary (with and without the end-of-word mark): nothing maps to unknown.
    assert len(tok) >= 512 + len(world_words())
