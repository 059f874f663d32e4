"""Wordle: the model sees earlier guesses with the game's feedback and answers `<guess>WORD</guess>`.

Feedback follows the real game, duplicates included: greens first, then each remaining letter of the secret can
turn at most one guessed letter yellow, left to right. Rewards: format, consistency with every feedback row so far
(the skill that matters), and solving. Hooks: rl, sft, dpo, eval.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

WORDS = """
about above actor acute admit adopt adult after again agent agree ahead alarm album alert alike alive allow alone
along alter among anger angle angry apart apple apply arena argue arise array aside asset audio audit avoid award
aware badly baker bases basic beach began begin being below bench billy birth black blame blind block blood board
boost booth bound brain brand bread break breed brief bring broad broke brown build built buyer cable calif carry
catch cause chain chair chart chase cheap check chest chief child china chose civil claim class clean clear click
clock close coach coast could count court cover craft crane crash cream crime cross crowd crown curve cycle daily
dance dated dealt death debut delay depth doing doubt dozen draft drama drawn dream dress drill drink drive drove
dying eager early earth eight elite empty enemy enjoy enter entry equal error event every exact exist extra faith
false fault fiber field fifth fifty fight final first fixed flash fleet floor fluid focus force forth forty forum
found frame frank fraud fresh front fruit fully funny giant given glass globe going grace grade grand grant grass
great green gross group grown guard guess guest guide happy harry heart heavy hence horse hotel house human ideal
image index inner input issue joint judge known label large laser later laugh layer learn lease least leave legal
level light limit local logic loose lower lucky lunch lying magic major maker march match maybe mayor meant media
metal might minor minus mixed model money month moral motor mount mouse mouth movie music needs never newly night
noise north noted novel nurse occur ocean offer often order other ought paint panel paper party peace phase phone
photo piece pilot pitch place plain plane plant plate point pound power press price pride prime print prior prize
proof proud prove queen quick quiet quite radio raise range rapid ratio reach ready refer right rival river robin
roger roman rough round route royal rural scale scene scope score sense serve seven shall shape share sharp sheet
shelf shell shift shirt shock shoot short shown sight since sixth sixty sized skill sleep slide small smart smile
smith smoke solid solve sorry sound south space spare speak speed spend spent split spoke sport staff stage stake
stand start state steam steel stick still stock stone stood store storm story strip stuck study stuff style sugar
suite super sweet table taken taste taxes teach teeth terry thank theft their theme there these thick thing think
third those three threw throw tight times tired title today topic total touch tough tower track trade train treat
trend trial tried tries truck truly trust truth twice under undue union unity until upper upset urban usage usual
valid value video virus visit vital voice waste watch water wheel where which while white whole whose woman women
world worry worse worst worth would wound write wrong wrote yield young youth
""".split()
WORD_SET = frozenset(WORDS)
GUESS_RE = re.compile(r"<guess>\s*([A-Za-z]+)\s*</guess>")
SYSTEM = (
    "You are playing Wordle: find the secret 5-letter English word. After each guess the game marks every letter: "
    "G = right letter, right spot; Y = in the word, wrong spot; X = not in the word (or no more copies of it). "
    "Answer with your next guess as <guess>WORD</guess>."
)


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_examples: int = Field(512, ge=1)
    max_history: int = Field(3, ge=0, le=5)
    seed: int = 0


def feedback(secret: str, guess: str) -> str:
    """The game's marks for `guess` against `secret`: a string of G/Y/X, one per letter."""
    secret, guess = secret.lower(), guess.lower()
    if len(secret) != 5 or len(guess) != 5:
        raise ValueError("Wordle words have 5 letters")
    marks = ["X"] * 5
    unmatched = Counter()
    for i, (s, g) in enumerate(zip(secret, guess)):
        if s == g:
            marks[i] = "G"
        else:
            unmatched[s] += 1
    for i, g in enumerate(guess):
        if marks[i] != "G" and unmatched[g] > 0:
            marks[i] = "Y"
            unmatched[g] -= 1
    return "".join(marks)


def consistent(candidate: str, history: list[tuple[str, str]]) -> bool:
    """Could `candidate` be the secret, given every (guess, marks) so far?"""
    return len(candidate) == 5 and all(feedback(candidate, g) == m for g, m in history)


def parse_guess(text: str) -> str | None:
    found = GUESS_RE.findall(text)
    return found[-1].lower() if found else None


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def _opts(config) -> TaskConfig:
    return TaskConfig.model_validate(config.task)


def render_history(history: list[tuple[str, str]]) -> str:
    if not history:
        return "No guesses yet. Make your first guess."
    rows = "\n".join(f"{g.upper()} {' '.join(m)}" for g, m in history)
    return f"Your guesses so far:\n{rows}\nMake your next guess."


def make_games(opts: TaskConfig, salt: int = 0) -> list[dict]:
    rng = random.Random(opts.seed * 1000 + salt)
    games = []
    for _ in range(opts.num_examples):
        secret = rng.choice(WORDS)
        guesses = rng.sample([w for w in WORDS if w != secret], rng.randint(0, opts.max_history))
        history = [(g, feedback(secret, g)) for g in guesses]
        games.append({
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": render_history(history)}],
            "secret": secret,
            "history": [list(h) for h in history],
        })
    return games


def _history(row_history) -> list[tuple[str, str]]:
    return [(g, m) for g, m in row_history]


# Rewards: GRPO passes dataset columns (secret, history) as keyword lists, one entry per completion.
def format_reward(prompts, completions, **kwargs) -> list[float]:
    out = []
    for c in completions:
        guess = parse_guess(_text(c))
        out.append(0.0 if guess is None else 1.0 if len(guess) == 5 else 0.3)
    return out


def consistency_reward(prompts, completions, history, **kwargs) -> list[float]:
    out = []
    for c, h in zip(completions, history):
        guess = parse_guess(_text(c))
        if guess is None or len(guess) != 5:
            out.append(0.0)
            continue
        h = _history(h)
        agree = sum(feedback(guess, g) == m for g, m in h) / len(h) if h else 1.0
        out.append(agree * (1.0 if guess in WORD_SET else 0.5))
    return out


def solved_reward(prompts, completions, secret, **kwargs) -> list[float]:
    return [float(parse_guess(_text(c)) == s) for c, s in zip(completions, secret)]


def get_corpus(config) -> list[str]:
    return [SYSTEM] + [render_history(_history(g["history"])) for g in make_games(_opts(config))[:200]] + [
        f"<guess>{w}</guess>" for w in WORDS
    ]


def get_rl_dataset(config):
    from datasets import Dataset

    return Dataset.from_list(make_games(_opts(config)))


def get_reward_funcs(config, tokenizer):
    return [format_reward, consistency_reward, solved_reward]


def get_sft_dataset(config, tokenizer):
    """Prompt/completion pairs (TRL trains on the completion only); the answer is a word consistent with all marks."""
    from datasets import Dataset

    rng = random.Random(_opts(config).seed)
    rows = []
    for game in make_games(_opts(config), salt=1):
        options = [w for w in WORDS if consistent(w, _history(game["history"]))]
        rows.append({"prompt": game["prompt"],
                     "completion": [{"role": "assistant", "content": f"<guess>{rng.choice(options)}</guess>"}]})
    return Dataset.from_list(rows)


def get_dpo_dataset(config, tokenizer):
    from datasets import Dataset

    rng = random.Random(_opts(config).seed)
    rows = []
    for game in make_games(_opts(config), salt=2):
        h = _history(game["history"])
        good = [w for w in WORDS if consistent(w, h)]
        # Before any feedback every word fits, so the rejected answer breaks the format instead.
        bad = [w for w in WORDS if not consistent(w, h)] or [w[:4] for w in good]
        rows.append({
            "prompt": game["prompt"],
            "chosen": [{"role": "assistant", "content": f"<guess>{rng.choice(good)}</guess>"}],
            "rejected": [{"role": "assistant", "content": f"<guess>{rng.choice(bad)}</guess>"}],
        })
    return Dataset.from_list(rows)


def get_eval_dataset(config):
    return make_games(_opts(config), salt=3)


def compute_metrics(prompts, completions, dataset_rows, config, tokenizer) -> dict:
    n = max(len(completions), 1)
    secrets = [r["secret"] for r in dataset_rows]
    histories = [r["history"] for r in dataset_rows]
    fmt = format_reward(prompts, completions)
    guesses = [parse_guess(_text(c)) for c in completions]
    return {
        "format_rate": sum(f == 1.0 for f in fmt) / n,
        "valid_word_rate": sum(g in WORD_SET for g in guesses) / n,
        "consistent_rate": sum(g is not None and consistent(g, _history(h)) for g, h in zip(guesses, histories)) / n,
        "solve_rate": sum(solved_reward(prompts, completions, secrets)) / n,
        "n": len(completions),
    }
