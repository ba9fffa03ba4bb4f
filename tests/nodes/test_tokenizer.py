"""The CLIP tokenizer is built from shipped files only and matches OpenAI's ids."""

from nodes.models.tokenizer import BOS_ID, EOS_ID, load_clip_tokenizer

ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_sd1_tokenizer_gives_openai_ids():
    tokenizer = load_clip_tokenizer()
    assert tokenizer("a photo of an astronaut riding a horse").input_ids == ASTRONAUT_IDS
    assert len(tokenizer) == 49408


def test_punctuation_and_unicode_round_trip():
    tokenizer = load_clip_tokenizer()
    ids = tokenizer("Hello, World!! café").input_ids
    assert ids[:5] == [BOS_ID, 3306, 267, 1002, 748] and ids[-1] == EOS_ID
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello , world !! café"


def test_pad_styles():
    sd1 = load_clip_tokenizer("sd1")
    open_clip = load_clip_tokenizer("open_clip")
    assert sd1("a cat", padding="max_length", max_length=6).input_ids == [BOS_ID, 320, 2368, EOS_ID, EOS_ID, EOS_ID]
    assert open_clip("a cat", padding="max_length", max_length=6).input_ids == [BOS_ID, 320, 2368, EOS_ID, 0, 0]
    assert sd1.model_max_length == 77 and open_clip.pad_token_id == 0
