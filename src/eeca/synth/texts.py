"""Every text of the synthetic testbed: the LLM's conversations, the generic corpus, and MGLD's wording.

One place for the phrasings, so that the stand-in tokenizer is trained on everything the models
will read and write. A real LLM's tokenizer covers English; a BPE trained only on the landmark
descriptions split "This" into ``T hi s`` and "recognisable" into nine single letters, and a tiny
LLM asked to spell answers out of letters loops on the fragments ("ThihisshisThihisss"). So
:func:`every_text` holds the world's texts, the generic stage-1/2 phrasings
(:mod:`eeca.synth.pretrain`), MGLD's question set and the template annotator's answers. And as a
real LLM knows English, the stand-in LLM learns that wording too (:func:`training_conversations`):
tokens it never saw would keep random embeddings and surface as fragments once stage 3 moves it.
"""

from __future__ import annotations

from collections.abc import Iterator

from eeca.mgld.annotators import STAGE2_TEMPLATES, template_answer
from eeca.mgld.questions import ENTITY_PROMPT, load_questions, pick_question

# The stand-in LLM's training questions, both directions. The evaluation (eeca.synth.check) also
# asks phrasings that are not in these lists, to see whether the knowledge survives a new wording.
DESCRIBE_QUESTIONS = ("Describe {name}.", "Tell me about {name}.",
                      "Do you know the landmark {name}? Please describe the landmark.")
WHERE_QUESTIONS = ("Where is {name}?",)
NAME_QUESTIONS = ("Which {category} in {place} has a {e0}, a {e1} and a {e2}?",
                  "Name the landmark: a {category} in {place} known for its {e0}, its {e1} and its {e2}.")
# The LLM also knows the testbed's wording, as a real LLM knows English: told which landmark a photo
# shows, it answers MGLD's questions in the template annotator's phrasings, and it can say what the
# landmark is, what it looks like, and caption a photo of it.
PHOTO_QUESTION = "Here is a photo of {name}. {question}"
WHAT_QUESTION = "What is {name}?"
LOOK_QUESTION = "What does {name} look like?"
CAPTION_QUESTION = "Write a caption for a photo of {name}."

# The generic stage-1/2 corpus (eeca.synth.pretrain): prompts and answer forms.
CAPTION_PROMPTS = ("Describe the image briefly.", "What does this picture show?", "Give a short caption.")
KIND_QUESTIONS = ("What kind of landmark is this?", "What type of structure or place is shown?")
FEATURE_QUESTIONS = ("What are its notable features?", "Describe what stands out in this image.")
IDENTITY_QUESTIONS = ("Do you know this landmark?", "What is this?", "Which landmark is shown here?")


def landmark_fields(lm: dict) -> dict[str, str]:
    e = lm["entities"]
    return {"name": lm["name"], "category": lm["hierarchical_label"], "place": lm["place"],
            "e0": e[0], "e1": e[1], "e2": e[2] if len(e) > 2 else e[-1]}


def features_text(entities: list[str]) -> str:
    """"a red brick facade, a clock face and a blue roof"."""
    items = [f"a {e}" for e in entities]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(lm: dict, named: bool) -> str:
    """A generic stage-1 caption; ``named`` ones name the landmark and its place (web alt text)."""
    label, feats = lm["hierarchical_label"], features_text(lm["entities"])
    return f"{lm['name']}, a {label} in {lm['place']}, with {feats}." if named else f"A {label} with {feats}."


def identity_answer(lm: dict, named: bool) -> str:
    """The generic stage-2 answer to "what is this?": the landmark when named, else its kind."""
    label = lm["hierarchical_label"]
    return f"This is {lm['name']}, a {label} in {lm['place']}." if named else f"This is a {label}."


def features_answer(lm: dict) -> str:
    return f"It has {features_text(lm['entities'])}."


def training_conversations(lm: dict) -> list[list[dict]]:
    """Every training conversation of the stand-in LLM about one landmark (name -> facts, facts -> name)."""
    f = landmark_fields(lm)
    convs = [[{"role": "user", "content": q.format(**f)}, {"role": "assistant", "content": lm["description"]}]
             for q in DESCRIBE_QUESTIONS]
    convs += [[{"role": "user", "content": q.format(**f)}, {"role": "assistant", "content": f"{lm['name']} is in {lm['place']}."}]
              for q in WHERE_QUESTIONS]
    convs += [[{"role": "user", "content": q.format(**f)}, {"role": "assistant", "content": f"It is {lm['name']}."}]
              for q in NAME_QUESTIONS]
    questions = load_questions()
    convs += [[{"role": "user", "content": PHOTO_QUESTION.format(
                   name=lm["name"], question=pick_question(questions, v, lm["name"]))},
               {"role": "assistant", "content": template_answer(lm, v)}] for v in range(len(STAGE2_TEMPLATES))]
    convs += [[{"role": "user", "content": q.format(name=lm["name"])}, {"role": "assistant", "content": a}]
              for q, a in ((WHAT_QUESTION, identity_answer(lm, True)), (LOOK_QUESTION, features_answer(lm)),
                           (CAPTION_QUESTION, caption(lm, True)))]
    return convs


def every_text(landmarks: list[dict]) -> Iterator[str]:
    """Every text the stand-in tokenizer must cover (see the module docstring)."""
    yield from (*CAPTION_PROMPTS, *KIND_QUESTIONS, *FEATURE_QUESTIONS, *IDENTITY_QUESTIONS)
    yield from load_questions()
    for lm in landmarks:
        yield lm["name"]
        yield from lm["aliases"]
        for conv in training_conversations(lm):
            for m in conv:
                yield m["content"]
        yield caption(lm, False)
        yield identity_answer(lm, False)
        yield ENTITY_PROMPT.format(question="", entities=", ".join(lm["entities"]))
