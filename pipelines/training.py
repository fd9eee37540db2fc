"""The training pipeline: validate -> features -> split -> train -> evaluate -> gate -> register."""

from kfp import dsl, kubernetes

from components.kfp_components import DEFAULT_IMAGE, make_components

__all__ = ["PIPELINE_NAME", "S3_CONFIG_KEYS", "S3_SECRET_KEYS", "build_training_pipeline"]

PIPELINE_NAME = "fraudops-training"
# The same Secret and ConfigMap as the rest of the platform (manifests/base/kustomization.yaml),
# under KServe's variable names, so one set of credentials serves every part.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_CONFIG_KEYS = ("S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL", "AWS_REGION")


def with_store_credentials(task: dsl.PipelineTask, secret, config) -> dsl.PipelineTask:
    """Give a task the store's credentials and settings as environment variables.

    On a cluster the pod gets the keys of the Secret ``secret`` and the ConfigMap ``config``
    (kfp-kubernetes). ``kfp.local`` ignores this and the step reads the caller's environment.
    """
    kubernetes.use_secret_as_env(task, secret, {key: key for key in S3_SECRET_KEYS})
    kubernetes.use_config_map_as_env(task, config, {key: key for key in S3_CONFIG_KEYS})
    return task


def build_training_pipeline(image: str = DEFAULT_IMAGE):
    """Return the ``@dsl.pipeline`` function with components on ``image``."""
    ops = make_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate transactions, engineer point-in-time fraud features, train, "
        "evaluate with fraud-grade metrics, gate against the champion, register a bundle.",
    )
    def training_pipeline(
        data_uri: str,
        store_uri: str = "s3://fraudops",
        model_name: str = "fraud-detector",
        mapping: str = "",
        label_delay_days: float = 7.0,
        test_days: float = 7.0,
        valid_days: float = 7.0,
        train_days: float = 0.0,
        burn_in_days: float = 7.0,
        train_start: str = "",
        train_end: str = "",
        valid_start: str = "",
        valid_end: str = "",
        test_start: str = "",
        test_end: str = "",
        model_type: str = "xgboost",
        model_params: dict = {},  # noqa: B006 - KFP reads the default from the signature
        class_weighting: str = "auto",
        resampling: str = "none",
        search_budget_seconds: float = 0.0,
        seed: int = 42,
        threshold_policy: str = "alert_budget:100",
        card_precision_k: int = 100,
        gate_tolerance: float = 0.005,
        max_rejected_share: float = 0.05,
        s3_secret: str = "fraudops-s3",
        s3_config: str = "fraudops-s3-config",
    ):
        """Train and register a fraud model.

        Args:
            data_uri: Training data (CSV/Parquet): a path or s3://bucket/key.
            store_uri: Where bundles go: s3://bucket[/prefix] (MinIO) or a path.
            model_name: Registry name (lower-case, digits, '-').
            mapping: Column mapping, e.g. creditcard; empty for canonical columns.
            label_delay_days: Label delay: terminal features and the gaps between windows.
            test_days: Test window length (days before the end of the data).
            valid_days: Validation window length.
            train_days: Training window length; 0 = everything after the burn-in.
            burn_in_days: Days at the start kept out of training (windows lack history).
            train_start: Explicit window bounds (all six or none), ISO dates.
            model_type: xgboost, random_forest or logistic_regression.
            model_params: Hyperparameter overrides.
            class_weighting: auto, balanced, sqrt or none.
            resampling: none or smote.
            search_budget_seconds: Random search on the validation window (0: off).
            seed: Random seed.
            threshold_policy: alert_budget:<per day> or target_precision:<0..1>.
            card_precision_k: k of card precision@k.
            gate_tolerance: Allowed average-precision loss against the champion.
            max_rejected_share: Largest share of quarantined rows.
            s3_secret: Kubernetes Secret with the S3 keys, in the run's namespace (cluster only).
            s3_config: Kubernetes ConfigMap with S3_ENDPOINT etc. (cluster only).
        """
        validated = ops.validate(
            data_uri=data_uri, mapping=mapping, max_rejected_share=max_rejected_share
        ).set_display_name("validate")
        with_store_credentials(validated, s3_secret, s3_config)
        feats = ops.features(
            data=validated.outputs["accepted"],
            report=validated.outputs["report"],
            label_delay_days=label_delay_days,
        ).set_display_name("features")
        split = ops.split(
            features=feats.outputs["features"],
            test_days=test_days,
            valid_days=valid_days,
            train_days=train_days,
            gap_days=label_delay_days,
            burn_in_days=burn_in_days,
            train_start=train_start,
            train_end=train_end,
            valid_start=valid_start,
            valid_end=valid_end,
            test_start=test_start,
            test_end=test_end,
        ).set_display_name("split by time")
        trained = ops.train(
            train=split.outputs["train"],
            valid=split.outputs["valid"],
            spec=feats.outputs["spec"],
            model_type=model_type,
            model_params=model_params,
            class_weighting=class_weighting,
            resampling=resampling,
            search_budget_seconds=search_budget_seconds,
            seed=seed,
        ).set_display_name("train")
        evaluated = ops.evaluate(
            model=trained.outputs["model"],
            valid=split.outputs["valid"],
            test=split.outputs["test"],
            spec=feats.outputs["spec"],
            threshold_policy=threshold_policy,
            k=card_precision_k,
        ).set_display_name("evaluate")
        gate = ops.gate(
            report=evaluated.outputs["report"],
            data=validated.outputs["accepted"],
            plan=split.outputs["plan"],
            store_uri=store_uri,
            model_name=model_name,
            tolerance=gate_tolerance,
        ).set_display_name("gate vs champion")
        with_store_credentials(gate, s3_secret, s3_config)
        with dsl.If(gate.outputs["Output"] == True, name="challenger-passed"):  # noqa: E712
            registered = ops.register(
                model=trained.outputs["model"],
                spec=feats.outputs["spec"],
                report=evaluated.outputs["report"],
                threshold=evaluated.outputs["threshold"],
                plots=evaluated.outputs["plots"],
                data=validated.outputs["accepted"],
                features=feats.outputs["features"],
                plan=split.outputs["plan"],
                decision=gate.outputs["decision"],
                info=trained.outputs["info"],
                validation=validated.outputs["report"],
                store_uri=store_uri,
                model_name=model_name,
            ).set_display_name("register bundle")
            with_store_credentials(registered, s3_secret, s3_config)

    return training_pipeline
