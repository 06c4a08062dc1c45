from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    INT64: _ClassVar[DType]
    INT32: _ClassVar[DType]
    UINT8: _ClassVar[DType]
    UINT32: _ClassVar[DType]
    INT8: _ClassVar[DType]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    RAW: _ClassVar[Codec]
    MASKED_FIXED_POINT: _ClassVar[Codec]
    QUANTISED_INT8: _ClassVar[Codec]
    TOP_K: _ClassVar[Codec]
    TOP_K_INT8: _ClassVar[Codec]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    TRAIN: _ClassVar[Stage]
    ADVERTISE_KEYS: _ClassVar[Stage]
    SHARE_KEYS: _ClassVar[Stage]
    MASKED_UPDATE: _ClassVar[Stage]
    UNMASK: _ClassVar[Stage]
    EVALUATE: _ClassVar[Stage]
    SCHEMA: _ClassVar[Stage]
    STATISTICS: _ClassVar[Stage]
    CONSISTENCY: _ClassVar[Stage]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT64: DType
FLOAT16: DType
INT64: DType
INT32: DType
UINT8: DType
UINT32: DType
INT8: DType
CODEC_UNSPECIFIED: Codec
RAW: Codec
MASKED_FIXED_POINT: Codec
QUANTISED_INT8: Codec
TOP_K: Codec
TOP_K_INT8: Codec
STAGE_UNSPECIFIED: Stage
TRAIN: Stage
ADVERTISE_KEYS: Stage
SHARE_KEYS: Stage
MASKED_UPDATE: Stage
UNMASK: Stage
EVALUATE: Stage
SCHEMA: Stage
STATISTICS: Stage
CONSISTENCY: Stage

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("tensor", "offset", "data")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tensor: int
    offset: int
    data: bytes
    def __init__(self, tensor: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RoundRef(_message.Message):
    __slots__ = ("job", "round", "attempt", "site")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    job: str
    round: int
    attempt: int
    site: str
    def __init__(self, job: _Optional[str] = ..., round: _Optional[int] = ..., attempt: _Optional[int] = ..., site: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("job", "site", "protocol_version")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    job: str
    site: str
    protocol_version: int
    def __init__(self, job: _Optional[str] = ..., site: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("ref", "stage", "model_version", "evaluate", "config", "deadline_unix_seconds", "secure", "preprocessing")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    stage: Stage
    model_version: int
    evaluate: bool
    config: _containers.ScalarMap[str, float]
    deadline_unix_seconds: float
    secure: SecAggTask
    preprocessing: str
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., stage: _Optional[_Union[Stage, str]] = ..., model_version: _Optional[int] = ..., evaluate: _Optional[bool] = ..., config: _Optional[_Mapping[str, float]] = ..., deadline_unix_seconds: _Optional[float] = ..., secure: _Optional[_Union[SecAggTask, _Mapping]] = ..., preprocessing: _Optional[str] = ...) -> None: ...

class SecAggParams(_message.Message):
    __slots__ = ("threshold", "clip_range", "clip_norm", "noise_stddev", "equal_weights", "num_sites")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLIP_RANGE_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_STDDEV_FIELD_NUMBER: _ClassVar[int]
    EQUAL_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    NUM_SITES_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    clip_range: float
    clip_norm: float
    noise_stddev: float
    equal_weights: bool
    num_sites: int
    def __init__(self, threshold: _Optional[int] = ..., clip_range: _Optional[float] = ..., clip_norm: _Optional[float] = ..., noise_stddev: _Optional[float] = ..., equal_weights: _Optional[bool] = ..., num_sites: _Optional[int] = ...) -> None: ...

class SiteKeys(_message.Message):
    __slots__ = ("site", "index", "share_public_key", "mask_public_key", "num_samples", "certificate", "signature")
    SITE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site: str
    index: int
    share_public_key: bytes
    mask_public_key: bytes
    num_samples: int
    certificate: bytes
    signature: bytes
    def __init__(self, site: _Optional[str] = ..., index: _Optional[int] = ..., share_public_key: _Optional[bytes] = ..., mask_public_key: _Optional[bytes] = ..., num_samples: _Optional[int] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "recipient", "nonce", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareBundle(_message.Message):
    __slots__ = ("ref", "recipient", "mask_key_share", "self_seed_share")
    REF_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_SHARE_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_SHARE_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    recipient: str
    mask_key_share: bytes
    self_seed_share: bytes
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., recipient: _Optional[str] = ..., mask_key_share: _Optional[bytes] = ..., self_seed_share: _Optional[bytes] = ...) -> None: ...

class SecretShare(_message.Message):
    __slots__ = ("owner", "x", "y")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    owner: str
    x: int
    y: bytes
    def __init__(self, owner: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[bytes] = ...) -> None: ...

class SecAggTask(_message.Message):
    __slots__ = ("params", "roster", "inbox", "survivors", "dropped", "next_roster", "consistency", "scores_only")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    INBOX_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROSTER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    SCORES_ONLY_FIELD_NUMBER: _ClassVar[int]
    params: SecAggParams
    roster: _containers.RepeatedCompositeFieldContainer[SiteKeys]
    inbox: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    next_roster: _containers.RepeatedCompositeFieldContainer[SiteKeys]
    consistency: _containers.RepeatedCompositeFieldContainer[SurvivorSignature]
    scores_only: bool
    def __init__(self, params: _Optional[_Union[SecAggParams, _Mapping]] = ..., roster: _Optional[_Iterable[_Union[SiteKeys, _Mapping]]] = ..., inbox: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ..., survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., next_roster: _Optional[_Iterable[_Union[SiteKeys, _Mapping]]] = ..., consistency: _Optional[_Iterable[_Union[SurvivorSignature, _Mapping]]] = ..., scores_only: _Optional[bool] = ...) -> None: ...

class SurvivorSignature(_message.Message):
    __slots__ = ("site", "signature")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    site: str
    signature: bytes
    def __init__(self, site: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class IdentityChallenge(_message.Message):
    __slots__ = ("ref", "nonce")
    REF_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    nonce: bytes
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class IdentityProof(_message.Message):
    __slots__ = ("certificate", "signature")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    signature: bytes
    def __init__(self, certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ProgressRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ...) -> None: ...

class ProgressReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class Consistency(_message.Message):
    __slots__ = ("ref", "signature")
    REF_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    signature: bytes
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("ref", "model_version", "share_public_key", "mask_public_key", "num_samples", "certificate", "signature")
    REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    model_version: int
    share_public_key: bytes
    mask_public_key: bytes
    num_samples: int
    certificate: bytes
    signature: bytes
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., model_version: _Optional[int] = ..., share_public_key: _Optional[bytes] = ..., mask_public_key: _Optional[bytes] = ..., num_samples: _Optional[int] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class KeyShares(_message.Message):
    __slots__ = ("ref", "shares")
    REF_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class Reveal(_message.Message):
    __slots__ = ("ref", "self_seed_shares", "mask_key_shares", "next_round_shares", "pair_seeds")
    REF_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROUND_SHARES_FIELD_NUMBER: _ClassVar[int]
    PAIR_SEEDS_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    self_seed_shares: _containers.RepeatedCompositeFieldContainer[SecretShare]
    mask_key_shares: _containers.RepeatedCompositeFieldContainer[SecretShare]
    next_round_shares: KeyShares
    pair_seeds: _containers.RepeatedCompositeFieldContainer[PairSeed]
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., self_seed_shares: _Optional[_Iterable[_Union[SecretShare, _Mapping]]] = ..., mask_key_shares: _Optional[_Iterable[_Union[SecretShare, _Mapping]]] = ..., next_round_shares: _Optional[_Union[KeyShares, _Mapping]] = ..., pair_seeds: _Optional[_Iterable[_Union[PairSeed, _Mapping]]] = ...) -> None: ...

class PairSeed(_message.Message):
    __slots__ = ("peer", "seed")
    PEER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    peer: str
    seed: bytes
    def __init__(self, peer: _Optional[str] = ..., seed: _Optional[bytes] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("job", "rounds_completed", "succeeded", "message")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job: str
    rounds_completed: int
    succeeded: bool
    message: str
    def __init__(self, job: _Optional[str] = ..., rounds_completed: _Optional[int] = ..., succeeded: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("task", "finished")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    task: Task
    finished: Finished
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("ref", "has_model", "have_version")
    REF_FIELD_NUMBER: _ClassVar[int]
    HAS_MODEL_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    has_model: bool
    have_version: int
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., has_model: _Optional[bool] = ..., have_version: _Optional[int] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("ref", "model_version", "tensors", "codec", "base_version")
    REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    model_version: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    codec: Codec
    base_version: int
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., model_version: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., codec: _Optional[_Union[Codec, str]] = ..., base_version: _Optional[int] = ...) -> None: ...

class ModelPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    chunk: TensorChunk
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class SiteSchema(_message.Message):
    __slots__ = ("columns", "labels")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("ref", "model_version", "num_samples", "metrics", "tensors", "codec", "next_round_keys", "schema", "unopened_shares", "revealed_for")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROUND_KEYS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    UNOPENED_SHARES_FIELD_NUMBER: _ClassVar[int]
    REVEALED_FOR_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    model_version: int
    num_samples: int
    metrics: _containers.ScalarMap[str, float]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    codec: Codec
    next_round_keys: KeyAdvertisement
    schema: SiteSchema
    unopened_shares: _containers.RepeatedScalarFieldContainer[str]
    revealed_for: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., model_version: _Optional[int] = ..., num_samples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., codec: _Optional[_Union[Codec, str]] = ..., next_round_keys: _Optional[_Union[KeyAdvertisement, _Mapping]] = ..., schema: _Optional[_Union[SiteSchema, _Mapping]] = ..., unopened_shares: _Optional[_Iterable[str]] = ..., revealed_for: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdatePart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    chunk: TensorChunk
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("ref", "bytes_received")
    REF_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    bytes_received: int
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("ref", "model_version", "num_samples", "metrics", "counts", "withheld")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    model_version: int
    num_samples: int
    metrics: _containers.ScalarMap[str, float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    withheld: bool
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., model_version: _Optional[int] = ..., num_samples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., counts: _Optional[_Iterable[int]] = ..., withheld: _Optional[bool] = ...) -> None: ...

class Decline(_message.Message):
    __slots__ = ("ref", "stage", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: RoundRef
    stage: Stage
    reason: str
    def __init__(self, ref: _Optional[_Union[RoundRef, _Mapping]] = ..., stage: _Optional[_Union[Stage, str]] = ..., reason: _Optional[str] = ...) -> None: ...
