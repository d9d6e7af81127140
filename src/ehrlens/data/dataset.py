"""Samples -> fitted processors -> a torch Dataset whose batches a model takes as ``**batch``.

A batch is a dict:

- ``"patient_id"``, ``"visit_id"``: lists of strings (``visit_id`` entries may be ``None``);
- one padded tensor per feature key and per label key;
- ``"masks"``: ``{key: [batch, steps] bool}`` for features whose padding the values cannot show
  (``"timeseries"``: processors with ``needs_step_mask``); code features are padded with id 0
  and need no mask;
- ``"times"``: ``{key: [batch, steps] float}`` for ``"timeseries"`` and ``"stagenet"`` features.

Example:
    >>> samples = [
    ...     {"patient_id": "p1", "conditions": ["I10", "E11.9"], "label": 1},
    ...     {"patient_id": "p2", "conditions": ["I10"], "label": 0},
    ... ]
    >>> ds = create_sample_dataset(samples, {"conditions": "sequence"}, {"label": "binary"})
    >>> batch = next(iter(get_dataloader(ds, batch_size=2)))
    >>> batch["conditions"].shape, batch["label"].shape
    (torch.Size([2, 2]), torch.Size([2, 1]))
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.ids import find_id_clash
from .identity import SAMPLE_IDENTITY, STEPS_KEY, item_identity
from .processors import (
    FEATURE_PROCESSORS,
    PAD_ID,
    BinaryLabelProcessor,
    FeatureProcessor,
    LabelProcessor,
    TruncationWarning,
    check_max_length,
    make_feature_processor,
    make_label_processor,
)

#: ``max_length`` of :func:`create_sample_dataset`: one limit for every time-ordered feature,
#: or a limit per feature key.
MaxLength = int | Mapping[str, int] | None

#: Batch keys with a fixed meaning; no feature or label may use them.
RESERVED_KEYS = frozenset({"patient_id", "visit_id", "masks", "times", STEPS_KEY, *SAMPLE_IDENTITY})

SCHEMA_FORMAT_VERSION = 1

#: Default of :func:`create_sample_dataset`'s ``max_steps``: steps (codes of a sequence, visits,
#: time steps) one sample may have in one feature, after any ``max_length`` cut.
MAX_STEPS = 10_000
#: Default of ``max_codes_per_step``: codes one visit or stagenet step may hold.
MAX_CODES_PER_STEP = 1_000


class FittedSchema:
    """Input/output schemas with their fitted processors: what a model knows of its data.

    Saved with every model so that new patients are converted with the training vocabulary.

    Args:
        input_processors: ``{feature_key: fitted FeatureProcessor}``.
        output_processors: ``{label_key: fitted LabelProcessor}``.
    """

    def __init__(
        self,
        input_processors: Mapping[str, FeatureProcessor],
        output_processors: Mapping[str, LabelProcessor],
    ) -> None:
        self.input_processors = dict(input_processors)
        self.output_processors = dict(output_processors)

    @property
    def input_schema(self) -> dict[str, str]:
        return {k: p.schema for k, p in self.input_processors.items()}

    @property
    def output_schema(self) -> dict[str, str]:
        return {k: p.schema for k, p in self.output_processors.items()}

    @property
    def feature_keys(self) -> list[str]:
        return list(self.input_processors)

    @property
    def label_keys(self) -> list[str]:
        return list(self.output_processors)

    @classmethod
    def fit(
        cls,
        samples: Sequence[Mapping[str, Any]],
        input_schema: Mapping[str, str],
        output_schema: Mapping[str, str],
        max_length: MaxLength = None,
        positive_class: str | None = None,
    ) -> FittedSchema:
        """Create one processor per key and fit it on every sample's value.

        ``max_length`` and ``positive_class`` as in :func:`create_sample_dataset`.
        """
        _check_schema_keys(input_schema, output_schema)
        limits = _max_lengths(max_length, input_schema)
        inputs = {k: make_feature_processor(s, k, limits.get(k)) for k, s in input_schema.items()}
        outputs = {k: make_label_processor(s, k) for k, s in output_schema.items()}
        if positive_class is not None:
            binary = [p for p in outputs.values() if isinstance(p, BinaryLabelProcessor)]
            if not binary:
                raise ValueError(
                    f"positive_class={positive_class!r} is for a binary label; the labels "
                    f"are {dict(output_schema)}"
                )
            for processor in binary:
                processor.positive_class = positive_class
        for key, fitted in [*inputs.items(), *outputs.items()]:
            fitted.fit([_field(sample, key, i) for i, sample in enumerate(samples)], key)
        return cls(inputs, outputs)

    def state_dict(self) -> dict[str, Any]:
        """Plain-data form: schema strings and each processor's fitted state."""

        def dump(processors: Mapping[str, Any]) -> dict[str, Any]:
            return {k: {"schema": p.schema, "state": p.state_dict()} for k, p in processors.items()}

        return {
            "format_version": SCHEMA_FORMAT_VERSION,
            "inputs": dump(self.input_processors),
            "outputs": dump(self.output_processors),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FittedSchema:
        """Rebuild fitted processors saved with :meth:`state_dict`."""
        if not isinstance(state, Mapping):
            raise ValueError(f"schema state must be a dict, got {type(state).__name__}")
        version = state.get("format_version")
        if version != SCHEMA_FORMAT_VERSION:
            raise ValueError(
                f"schema format version {version!r} is not supported "
                f"(this ehrlens reads version {SCHEMA_FORMAT_VERSION})"
            )
        processors: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}
        for group, kind, make in (
            ("inputs", "feature", make_feature_processor),
            ("outputs", "label", make_label_processor),
        ):
            entries = state.get(group)
            if not isinstance(entries, Mapping):
                raise ValueError(f"schema state: '{group}' must be a dict, got {entries!r:.80}")
            for key, entry in entries.items():
                if not isinstance(entry, Mapping) or "schema" not in entry:
                    raise ValueError(f"{kind} '{key}': saved entry has no schema string")
                processor = make(entry["schema"], key)
                try:
                    processor.load_state_dict(entry.get("state") or {})
                except (KeyError, TypeError, ValueError) as error:
                    raise ValueError(
                        f"{kind} '{key}': saved processor state is invalid ({error!r:.200})"
                    ) from error
                processors[group][key] = processor
        return cls(processors["inputs"], processors["outputs"])


def _check_schema_keys(input_schema: Mapping[str, str], output_schema: Mapping[str, str]) -> None:
    for name, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
        if not isinstance(schema, Mapping):
            raise TypeError(f"{name} must be a dict of key -> schema string, got {schema!r}")
    if not input_schema:
        raise ValueError("input_schema is empty: name at least one feature key")
    for key in (*input_schema, *output_schema):
        if key in RESERVED_KEYS:
            raise ValueError(f"key '{key}' is reserved for batch metadata; rename the feature")
    both = set(input_schema) & set(output_schema)
    if both:
        raise ValueError(f"keys {sorted(both)} are in both input_schema and output_schema")


def _max_lengths(max_length: MaxLength, input_schema: Mapping[str, str]) -> dict[str, int]:
    """Per feature key, the ``max_length`` to fit its processor with."""
    if max_length is None:
        return {}
    if isinstance(max_length, Mapping):
        unknown = sorted(str(k) for k in max_length if k not in input_schema)
        if unknown:
            raise ValueError(
                f"max_length names {unknown}, which are not input features {sorted(input_schema)}"
            )
        return {k: v for k, v in max_length.items() if v is not None}
    # One limit for every feature that is ordered in time; fixed-size vectors are left alone.
    # (An unknown schema string keeps the limit: fitting then names the string.)
    limit = check_max_length(max_length)
    if limit is None:
        return {}
    return {k: limit for k, schema in input_schema.items() if _time_ordered(schema)}


def _time_ordered(schema: Any) -> bool:
    cls = FEATURE_PROCESSORS.get(schema) if isinstance(schema, str) else None
    return cls is None or cls.supports_max_length


def _field(sample: Any, key: str, index: int) -> Any:
    if not isinstance(sample, Mapping):
        raise TypeError(f"sample {index}: expected a dict, got {type(sample).__name__}")
    if key not in sample:
        raise ValueError(
            f"sample {index} (patient_id={sample.get('patient_id')!r}): missing key '{key}' "
            f"named in the schema; present keys: {sorted(sample)}"
        )
    return sample[key]


class SampleDataset(Dataset):
    """Processed samples plus the fitted schema that produced them.

    Items are dicts of processed fields; :meth:`collate` pads a list of them into a batch.
    Create one with :func:`create_sample_dataset`.

    Attributes:
        truncated: ``{feature_key: number of samples cut to max_length}`` when the dataset was
            created, for every feature with a ``max_length`` (empty for subsets).
    """

    def __init__(
        self,
        items: list[dict[str, Any]],
        schema: FittedSchema,
        dataset_name: str | None = None,
        has_labels: bool = True,
        truncated: Mapping[str, int] | None = None,
    ) -> None:
        self.items = items
        self.schema = schema
        self.dataset_name = dataset_name
        self.has_labels = has_labels
        self.truncated: dict[str, int] = dict(truncated or {})

    # Convenience views of the schema --------------------------------------------------
    @property
    def input_schema(self) -> dict[str, str]:
        return self.schema.input_schema

    @property
    def output_schema(self) -> dict[str, str]:
        return self.schema.output_schema

    @property
    def input_processors(self) -> dict[str, FeatureProcessor]:
        return self.schema.input_processors

    @property
    def output_processors(self) -> dict[str, LabelProcessor]:
        return self.schema.output_processors

    @property
    def feature_keys(self) -> list[str]:
        return self.schema.feature_keys

    @property
    def label_keys(self) -> list[str]:
        return self.schema.label_keys

    @property
    def patient_ids(self) -> list[str]:
        return [item["patient_id"] for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def subset(self, indices: Sequence[int]) -> SampleDataset:
        """A dataset of the given items that shares this one's fitted schema."""
        return SampleDataset(
            [self.items[i] for i in indices], self.schema, self.dataset_name, self.has_labels
        )

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of items into one batch dict (see the module docstring)."""
        if not items:
            raise ValueError("cannot collate an empty list of samples")
        batch: dict[str, Any] = {
            "patient_id": [item["patient_id"] for item in items],
            "visit_id": [item["visit_id"] for item in items],
            "masks": {},
            "times": {},
        }
        for key, processor in self.input_processors.items():
            collated = processor.collate([item[key] for item in items])
            batch[key] = collated.values
            if collated.mask is not None:
                batch["masks"][key] = collated.mask
            if collated.times is not None:
                batch["times"][key] = collated.times
        if self.has_labels:
            for key, label_processor in self.output_processors.items():
                batch[key] = label_processor.collate([item[key] for item in items])
        return batch


def create_sample_dataset(
    samples: Sequence[Mapping[str, Any]],
    input_schema: Mapping[str, str] | None = None,
    output_schema: Mapping[str, str] | None = None,
    dataset_name: str | None = None,
    *,
    schema: FittedSchema | None = None,
    max_length: MaxLength = None,
    max_steps: int | None = MAX_STEPS,
    max_codes_per_step: int | None = MAX_CODES_PER_STEP,
    positive_class: str | None = None,
) -> SampleDataset:
    """Validate, fit processors on, and convert a list of patient samples.

    Args:
        samples: dicts with ``patient_id``, optional ``visit_id``, every feature key and every
            label key; optionally identity for the attribution rows (``subject_id``,
            ``prediction_time``, ``steps``: see :mod:`ehrlens.data.identity`). Other keys
            are ignored.
        input_schema: ``{feature_key: "sequence" | "nested_sequence" | "timeseries" |
            "stagenet" | "tensor"}``, or any schema string registered with
            :func:`~ehrlens.data.processors.register_processor`.
        output_schema: ``{label_key: "binary" | "multiclass" | "multilabel" | "regression"}``.
        dataset_name: a name kept for reports.
        schema: an already fitted schema (e.g. ``model.schema``) to convert new patients with
            the training vocabulary; then the two schema dicts may be omitted, and label keys
            may be absent from every sample (scoring without labels).
        max_length: keep at most this many steps per sample (codes of a ``"sequence"``, visits
            of a ``"nested_sequence"``, steps of a ``"stagenet"`` or ``"timeseries"``): an int
            for every such feature, or ``{feature_key: int}``. Longer samples keep their
            **last** steps, the most recent when steps are listed in time order. Truncation
            is reported: one :class:`~ehrlens.data.processors.TruncationWarning` per feature
            naming the key and how many samples were cut, and ``dataset.truncated``. The
            limit is part of the fitted schema (saved with a model), so new patients
            converted with ``schema=`` are cut the same way. ``None`` keeps everything.
        max_steps: refuse a sample with more steps than this in one feature (after the
            ``max_length`` cut): one outlier would otherwise pad its whole batch to its length.
            Default :data:`MAX_STEPS`; ``None``: no limit.
        max_codes_per_step: refuse a visit (or stagenet step) with more codes than this.
            Default :data:`MAX_CODES_PER_STEP`; ``None``: no limit.
        positive_class: the value of a binary label that is its positive class (class 1,
            whose probability the model gives), e.g. ``"high"``; needed when the two values
            are not 0/1, false/true or no/yes.

    Returns:
        A :class:`SampleDataset`.

    Raises:
        ValueError / TypeError naming the sample index, the key and what was expected; a
        ``ValueError`` naming both samples when two have the same ``patient_id`` and
        ``visit_id``, or patient ids equal only as text (``7`` and ``"7"``); a
        ``ValueError`` naming the sample, key and size when a sample exceeds ``max_steps``
        or ``max_codes_per_step``.

    Example:
        >>> import warnings
        >>> long = [{"patient_id": f"p{i}", "codes": list("ABCD"), "y": 1} for i in range(3)]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ds = create_sample_dataset(long, {"codes": "sequence"}, {"y": "binary"},
        ...                                max_length=2)   # a TruncationWarning: 3 were cut
        >>> ds.truncated, caught[0].category.__name__
        ({'codes': 3}, 'TruncationWarning')
    """
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of dicts, got {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("samples is empty: a dataset needs at least one sample")
    if schema is None:
        if input_schema is None or output_schema is None:
            raise ValueError("give input_schema and output_schema, or a fitted schema=")
        schema = FittedSchema.fit(samples, input_schema, output_schema, max_length, positive_class)
    elif max_length is not None or positive_class is not None:
        raise ValueError(
            "max_length and positive_class are part of a fitted schema (set when it was "
            "fitted); they cannot be changed for schema="
        )
    elif input_schema is not None and dict(input_schema) != schema.input_schema:
        raise ValueError(
            f"input_schema {dict(input_schema)} differs from the fitted schema's "
            f"{schema.input_schema}"
        )
    clash = find_id_clash(samples)
    if clash is not None:
        raise ValueError(clash.describe(f"sample {clash.first}", f"sample {clash.second}"))
    limits = (
        _check_limit(max_steps, "max_steps"),
        _check_limit(max_codes_per_step, "max_codes_per_step"),
    )
    has_labels = _labels_present(samples, schema.label_keys)
    limited = {k: p for k, p in schema.input_processors.items() if p.max_length is not None}
    before = {k: p.truncated_samples for k, p in limited.items()}
    items = []
    for index, sample in enumerate(samples):
        pid = _field(sample, "patient_id", index)
        item: dict[str, Any] = {"patient_id": str(pid), "visit_id": sample.get("visit_id")}
        for key, processor in schema.input_processors.items():
            item[key] = processor.process(_field(sample, key, index), key, index)
            _check_size(item[key], processor, limits, f"sample {index} (patient_id={pid!r})", key)
        if has_labels:
            for key, label_processor in schema.output_processors.items():
                item[key] = label_processor.process(_field(sample, key, index), key, index)
        item.update(item_identity(sample, item, f"sample {index} (patient_id={pid!r})"))
        items.append(item)
    truncated = {k: p.truncated_samples - before[k] for k, p in limited.items()}
    for key, count in truncated.items():
        if count:
            limit = limited[key].max_length
            warnings.warn(
                TruncationWarning(
                    f"feature '{key}': {count} of {len(samples)} samples had more than "
                    f"max_length={limit} steps and were cut to their last {limit}"
                ),
                stacklevel=2,
            )
    return SampleDataset(items, schema, dataset_name, has_labels, truncated)


def _check_limit(limit: Any, name: str) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {limit!r}")
    return limit


def _feature_tensor(value: Any) -> Tensor:
    """The values of a processed feature: the tensor itself, or the second of ``(times, x)``."""
    return value[1] if isinstance(value, tuple) else value


def _check_size(
    value: Any,
    processor: FeatureProcessor,
    limits: tuple[int | None, int | None],
    where: str,
    key: str,
) -> None:
    """Refuse a processed feature with more steps, or more codes in one step, than allowed."""
    max_steps, max_codes = limits
    if not processor.supports_max_length:  # fixed-size vectors have no steps
        return
    values = _feature_tensor(value)
    steps = values.shape[0]
    if max_steps is not None and steps > max_steps:
        raise ValueError(
            f"{where}, feature '{key}': {steps} steps, more than max_steps={max_steps}; keep "
            "the most recent steps with max_length= when fitting the schema, or allow longer "
            "histories with a larger max_steps= (None: no limit)"
        )
    nested = processor.is_token_feature and values.dim() == 2
    if max_codes is not None and nested and values.shape[1] > max_codes:
        widths = (values != PAD_ID).sum(dim=1)
        step = int(widths.argmax())
        if int(widths[step]) > max_codes:
            unit = "visit" if processor.schema == "nested_sequence" else "step"
            raise ValueError(
                f"{where}, feature '{key}': {unit} {step} has {int(widths[step])} codes, more than "
                f"max_codes_per_step={max_codes}; allow it with a larger max_codes_per_step= "
                "(None: no limit)"
            )


def _labels_present(samples: Sequence[Mapping[str, Any]], label_keys: list[str]) -> bool:
    """True when every sample has every label; False when none has any; else an error."""
    if not label_keys:
        return False
    for key in label_keys:
        missing = [i for i, s in enumerate(samples) if not isinstance(s, Mapping) or key not in s]
        if missing and len(missing) < len(samples):
            raise ValueError(
                f"sample {missing[0]}: missing label key '{key}' "
                f"({len(missing)} of {len(samples)} samples lack it)"
            )
        if missing:
            return False
    return True


def sample_size(item: Mapping[str, Any], feature_keys: Sequence[str]) -> int:
    """Number of values (codes, steps x measurements, ...) of one processed item, padding of
    its own nested visits included: what it adds to a batch padded to its length.

    Example:
        >>> sample_size(dataset[0], dataset.feature_keys)
        99
    """
    return sum(int(_feature_tensor(item[key]).numel()) for key in feature_keys)


def length_buckets(
    dataset: SampleDataset, batch_size: int, indices: Sequence[int] | None = None
) -> list[list[int]]:
    """Batches of ``batch_size`` dataset indices of similar size, shortest first.

    Indices are sorted by :func:`sample_size` (ties keep their order) and cut into batches,
    so a long outlier shares its batch only with the longest other samples instead of
    padding a batch of short ones to its length.

    Args:
        dataset: a :class:`SampleDataset`.
        batch_size: samples per batch (the last batch may be smaller).
        indices: which items (default: all), in input order.

    Returns:
        Lists of indices; together they hold every index once.

    Example:
        >>> small = dataset.subset(range(4))
        >>> [sample_size(item, small.feature_keys) for item in small.items]
        [99, 32, 50, 36]
        >>> length_buckets(small, 2)
        [[1, 3], [2, 0]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    chosen = list(range(len(dataset))) if indices is None else list(indices)
    keys = dataset.feature_keys
    order = sorted(chosen, key=lambda i: sample_size(dataset[i], keys))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler yielding :func:`length_buckets` of a dataset (fixed, shortest first).

    ``batches`` lists the dataset indices of every batch, in the order they are yielded, so a
    consumer can put per-sample results back in input order.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> sampler = LengthBucketSampler(dataset, batch_size=32)
        >>> loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate)
        >>> [len(batch["patient_id"]) for batch in loader]
        [32, 32, 32, 32, 2]
    """

    def __init__(self, dataset: SampleDataset, batch_size: int) -> None:
        self.batches = length_buckets(dataset, batch_size)

    def __iter__(self):
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def get_dataloader(
    dataset: SampleDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    num_workers: int = 0,
    bucket_by_length: bool = False,
) -> DataLoader:
    """A DataLoader that pads batches with ``dataset.collate``.

    Args:
        dataset: a :class:`SampleDataset`.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch; with ``seed`` the order is reproducible.
        seed: seed of the shuffling generator.
        num_workers: worker processes for loading.
        bucket_by_length: batch samples of similar size together (:class:`LengthBucketSampler`),
            so that one long patient does not pad a whole batch to its length. Batches then
            come shortest first, not in dataset order; a patient's outputs are those of an
            unbucketed run (within float rounding: only the padding around it changes).
            Not with ``shuffle``.

    Example:
        >>> loader = get_dataloader(dataset.subset(range(4)), 2, bucket_by_length=True)
        >>> loader.batch_sampler.batches          # dataset indices of each batch
        [[1, 3], [2, 0]]
    """
    if not isinstance(dataset, SampleDataset):
        raise TypeError(f"expected a SampleDataset, got {type(dataset).__name__}")
    if bucket_by_length:
        if shuffle:
            raise ValueError("bucket_by_length=True gives a fixed order; it cannot shuffle")
        return DataLoader(
            dataset,
            batch_sampler=LengthBucketSampler(dataset, batch_size),
            collate_fn=dataset.collate,
            num_workers=num_workers,
        )
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=dataset.collate,
        generator=generator,
        num_workers=num_workers,
    )


def split_by_patient(
    dataset: SampleDataset, ratios: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> list[SampleDataset]:
    """Split into datasets with disjoint patients (all of a patient's samples go together).

    Example:
        >>> train, val, test = split_by_patient(dataset, (0.7, 0.15, 0.15), seed=0)
        >>> len(train), len(val), len(test)
        (91, 19, 20)
    """
    if abs(sum(ratios) - 1.0) > 1e-6 or any(r < 0 for r in ratios):
        raise ValueError(f"ratios must be non-negative and sum to 1, got {list(ratios)}")
    patients = sorted(set(dataset.patient_ids))
    order = torch.randperm(len(patients), generator=torch.Generator().manual_seed(seed))
    shuffled = [patients[i] for i in order.tolist()]
    bounds, total = [], 0.0
    for r in ratios:
        total += r
        bounds.append(round(total * len(shuffled)))
    groups, start = [], 0
    for end in bounds:
        groups.append(set(shuffled[start:end]))
        start = end
    return [
        dataset.subset([i for i, pid in enumerate(dataset.patient_ids) if pid in group])
        for group in groups
    ]


def move_to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move every tensor of a batch (nested dicts included) to ``device``."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, Mapping):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in batch.items()}
