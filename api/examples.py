"""Examples in /openapi.json: real answers of the service (a tiny ring8 job, a 64-row .npz data set, a study of
two losses), recorded once from a running deployment and trimmed; api/openapi.py puts them on each operation and
tests/test_openapi_contract.py checks each against its schema.

RESPONSES: (method, path) → {status: the JSON body (a str: a text answer, the event stream)}. Request examples are
api/openapi.py REQUEST_EXAMPLES.
"""

from __future__ import annotations

from typing import Any

# ruff: noqa: E501

RESPONSES: dict[tuple[str, str], dict[int, Any]] = {
    ("post", "/v1/jobs"): {
        201: {
            "id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
            "name": "ring-nsgan",
            "status": "queued",
            "owner": "team-a",
            "spec": {
                "name": "ring-nsgan",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 16, "depth": 1, "spectral_norm": False},
                "loss": {
                    "optimizer": "adam",
                    "lr_g": 0.0002,
                    "lr_d": 0.0002,
                    "betas": [0.5, 0.999],
                    "n_critic": 1,
                    "r1_gamma": 0.0,
                    "r1_every": 16,
                    "name": "nsgan",
                },
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": 2500,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
                "init_from": None,
                "resources": {"queue": "ganforge", "gpus": 1},
                "priority": 50,
                "tags": {"team": "vision"},
            },
            "tags": {"team": "vision"},
            "progress": {"step": 0, "total_steps": 5, "steps_per_sec": None, "eta_seconds": None},
            "latest_metrics": {},
            "attempt": 1,
            "max_attempts": 3,
            "error": None,
            "study_id": None,
            "priority": 50,
            "queue_reason": "waiting for a free worker",
            "alerts": [],
            "cpu_seconds": None,
            "gpu_seconds": None,
            "created_at": "2026-12-03T16:30:59.548830Z",
            "updated_at": "2026-12-03T16:30:59.548830Z",
            "started_at": None,
            "finished_at": None,
        },
        200: {
            "valid": True,
            "spec": {
                "name": "",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 16, "depth": 1, "spectral_norm": False},
                "loss": {
                    "optimizer": "adam",
                    "lr_g": 0.0002,
                    "lr_d": 0.0002,
                    "betas": [0.5, 0.999],
                    "n_critic": 1,
                    "r1_gamma": 0.0,
                    "r1_every": 16,
                    "name": "nsgan",
                },
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": 2500,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
                "init_from": None,
                "resources": {"queue": "ganforge", "gpus": 1},
                "priority": 50,
                "tags": {},
            },
        },
    },
    ("get", "/v1/jobs"): {
        200: {
            "jobs": [
                {
                    "id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
                    "name": "ring-nsgan",
                    "status": "succeeded",
                    "owner": "team-a",
                    "spec": {
                        "name": "ring-nsgan",
                        "dataset": {"builtin": "ring8", "id": None, "resize": None},
                        "architecture": {
                            "name": "mlp",
                            "latent_dim": 2,
                            "hidden": 16,
                            "depth": 1,
                            "spectral_norm": False,
                        },
                        "loss": {
                            "optimizer": "adam",
                            "lr_g": 0.0002,
                            "lr_d": 0.0002,
                            "betas": [0.5, 0.999],
                            "n_critic": 1,
                            "r1_gamma": 0.0,
                            "r1_every": 16,
                            "name": "nsgan",
                        },
                        "training": {
                            "steps": 5,
                            "batch_size": 8,
                            "seed": 0,
                            "ema_decay": 0.999,
                            "pack": 1,
                            "sample_count": 2500,
                            "device": "auto",
                            "max_attempts": 3,
                            "watch": {
                                "action": "report",
                                "collapse": True,
                                "collapse_drop": 0.5,
                                "collapse_floor": 0.25,
                                "patience": 3,
                                "warmup_steps": 200,
                                "divergence": True,
                                "vanishing_steps": 500,
                                "vanishing_grad": 0.1,
                            },
                        },
                        "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
                        "init_from": None,
                        "resources": {"queue": "ganforge", "gpus": 1},
                        "priority": 50,
                        "tags": {"team": "vision"},
                    },
                    "tags": {"team": "vision"},
                    "progress": {"step": 5, "total_steps": 5, "steps_per_sec": 191.6413240980874, "eta_seconds": None},
                    "latest_metrics": {
                        "d_fake": 0.18383081257343292,
                        "d_real": 0.2330923080444336,
                        "grad_norm_d": 0.206543430685997,
                        "grad_norm_g": 0.09346883744001389,
                        "loss_d": 1.3729643821716309,
                        "loss_g": 0.6051493287086487,
                        "hq_fraction": 0.0,
                        "modes_covered": 0.0,
                        "reverse_kl": 2.0794415416798357,
                        "reverse_kl_all": 1.6209031433297323,
                    },
                    "attempt": 1,
                    "max_attempts": 3,
                    "error": None,
                    "study_id": None,
                    "priority": 50,
                    "queue_reason": None,
                    "alerts": [],
                    "cpu_seconds": 2.497755229,
                    "gpu_seconds": None,
                    "created_at": "2026-12-03T16:30:59.548830Z",
                    "updated_at": "2026-12-03T16:31:03.432596Z",
                    "started_at": "2026-12-03T16:30:59.835711Z",
                    "finished_at": "2026-12-03T16:31:03.439350Z",
                }
            ],
            "next_cursor": None,
        }
    },
    ("get", "/v1/jobs/{job_id}"): {
        200: {
            "id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
            "name": "ring-nsgan",
            "status": "succeeded",
            "owner": "team-a",
            "spec": {
                "name": "ring-nsgan",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 16, "depth": 1, "spectral_norm": False},
                "loss": {
                    "optimizer": "adam",
                    "lr_g": 0.0002,
                    "lr_d": 0.0002,
                    "betas": [0.5, 0.999],
                    "n_critic": 1,
                    "r1_gamma": 0.0,
                    "r1_every": 16,
                    "name": "nsgan",
                },
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": 2500,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
                "init_from": None,
                "resources": {"queue": "ganforge", "gpus": 1},
                "priority": 50,
                "tags": {"team": "vision"},
            },
            "tags": {"team": "vision"},
            "progress": {"step": 5, "total_steps": 5, "steps_per_sec": 191.6413240980874, "eta_seconds": None},
            "latest_metrics": {
                "d_fake": 0.18383081257343292,
                "d_real": 0.2330923080444336,
                "grad_norm_d": 0.206543430685997,
                "grad_norm_g": 0.09346883744001389,
                "loss_d": 1.3729643821716309,
                "loss_g": 0.6051493287086487,
                "hq_fraction": 0.0,
                "modes_covered": 0.0,
                "reverse_kl": 2.0794415416798357,
                "reverse_kl_all": 1.6209031433297323,
            },
            "attempt": 1,
            "max_attempts": 3,
            "error": None,
            "study_id": None,
            "priority": 50,
            "queue_reason": None,
            "alerts": [],
            "cpu_seconds": 2.497755229,
            "gpu_seconds": None,
            "created_at": "2026-12-03T16:30:59.548830Z",
            "updated_at": "2026-12-03T16:31:03.432596Z",
            "started_at": "2026-12-03T16:30:59.835711Z",
            "finished_at": "2026-12-03T16:31:03.439350Z",
        }
    },
    ("post", "/v1/jobs/{job_id}/cancel"): {
        202: {
            "id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
            "name": "ring-nsgan",
            "status": "cancelled",
            "owner": "team-a",
            "spec": {
                "name": "ring-nsgan",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 16, "depth": 1, "spectral_norm": False},
                "loss": {
                    "optimizer": "adam",
                    "lr_g": 0.0002,
                    "lr_d": 0.0002,
                    "betas": [0.5, 0.999],
                    "n_critic": 1,
                    "r1_gamma": 0.0,
                    "r1_every": 16,
                    "name": "nsgan",
                },
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": 2500,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
                "init_from": None,
                "resources": {"queue": "ganforge", "gpus": 1},
                "priority": 50,
                "tags": {"team": "vision"},
            },
            "tags": {"team": "vision"},
            "progress": {"step": 0, "total_steps": 5, "steps_per_sec": None, "eta_seconds": None},
            "latest_metrics": {},
            "attempt": 1,
            "max_attempts": 3,
            "error": None,
            "study_id": None,
            "priority": 50,
            "queue_reason": None,
            "alerts": [],
            "cpu_seconds": None,
            "gpu_seconds": None,
            "created_at": "2026-12-03T16:30:59.548830Z",
            "updated_at": "2026-12-03T16:30:59.548830Z",
            "started_at": None,
            "finished_at": "2026-12-03T16:30:59.548830Z",
        }
    },
    ("get", "/v1/jobs/{job_id}/metrics"): {
        200: {
            "job_id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
            "series": {
                "loss_d": {
                    "steps": [1, 2, 3, 4, 5],
                    "values": [
                        1.380657434463501,
                        1.3722792863845825,
                        1.388929843902588,
                        1.3951785564422607,
                        1.3729643821716309,
                    ],
                    "downsampled": False,
                },
                "loss_g": {
                    "steps": [1, 2, 3, 4, 5],
                    "values": [
                        0.604191780090332,
                        0.6039186716079712,
                        0.6042360663414001,
                        0.6039772033691406,
                        0.6051493287086487,
                    ],
                    "downsampled": False,
                },
            },
        }
    },
    ("get", "/v1/jobs/{job_id}/samples"): {
        200: {
            "samples": [
                {
                    "step": 5,
                    "count": 2500,
                    "png_url": "/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/samples/5.png",
                    "npy_url": "/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/samples/5.npy",
                    "labels": None,
                    "evaluation": {
                        "modes_covered": 0.0,
                        "hq_fraction": 0.0,
                        "reverse_kl": 2.0794415416798357,
                        "reverse_kl_all": 1.6209031433297323,
                    },
                    "created_at": "2026-12-03T16:31:03.357572Z",
                }
            ],
            "next_cursor": None,
        }
    },
    ("get", "/v1/jobs/{job_id}/checkpoints"): {
        200: {
            "checkpoints": [
                {
                    "step": 5,
                    "size_bytes": 3076,
                    "url": "/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/checkpoints/5",
                    "state_url": "/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/checkpoints/5?file=state",
                    "created_at": "2026-12-03T16:31:03.404497Z",
                }
            ],
            "next_cursor": None,
        }
    },
    ("get", "/v1/jobs/{job_id}/events"): {
        200: "retry: 1000\n"
        "\n"
        "id: 1\n"
        "event: status\n"
        "data: "
        '{"time":"2026-12-03T16:30:59.560111+00:00","from":null,"to":"queued","reason":"submitted","attempt":1,"key":"env:team-a"}\n'
        "\n"
        "id: 2\n"
        "event: status\n"
        "data: "
        '{"time":"2026-12-03T16:30:59.915866+00:00","from":"queued","to":"running","reason":"claimed '
        'by w-bca69b7f","attempt":1}\n'
        "\n"
        "id: 3\n"
        "event: sample\n"
        "data: "
        '{"time":"2026-12-03T16:31:03.362406+00:00","png_url":"/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/samples/5.png","npy_url":"/v1/jobs/0c5a2a92-833a-446e-9068-3b371795f7b6/samples/5.npy","step":5,"count":2500,"evaluation":{"modes_covered":0.0,"hq_fraction":0.0,"reverse_kl":2.0794415416798357,"reverse_kl_all":1.6209031433297323}}\n'
        "\n"
        "id: 4\n"
        "event: metrics\n"
        "data: "
        '{"time":"2026-12-03T16:31:03.381833+00:00","first_step":1,"last_step":5,"latest":{"d_fake":0.18383081257343292,"d_real":0.2330923080444336,"grad_norm_d":0.206543430685997,"grad_norm_g":0.09346883744001389,"loss_d":1.3729643821716309,"loss_g":0.6051493287086487,"hq_fraction":0.0,"modes_covered":0.0,"reverse_kl":2.0794415416798357,"reverse_kl_all":1.6209031433297323},"points":[["d_fake",1,0.19637084007263184],["d_real",1,0.2311236560344696],["grad_norm_d",1,0.22689524292945862],["grad_norm_g",1,0.08598761260509491],["loss_d",1,1.380657434463501],["loss_g",1,0.604191780090332],["d_fake",2,0.1897236406803131],["d_real",2,0.24181309342384338],["grad_norm_d",2,0.3124854862689972],["grad_norm_g",2,0.0867374837398529],["loss_d",2,1.3722792863845825],["loss_g",2,0.6039186716079712],["d_fake",3,0.18925163'
    },
    ("post", "/v1/datasets"): {
        201: {
            "id": "2bd11507-c44f-4b05-a1a3-d3e17e03a63d",
            "name": "points",
            "format": "npz",
            "info": {
                "kind": "points",
                "shape": [2],
                "num_classes": 0,
                "class_names": [],
                "size": 64,
                "description": "uploaded .npz: 64 rows of dimension 2 (float32, stored as float32)",
                "source_dtype": "float32",
                "source_range": [-2.32503080368042, 2.002392530441284],
                "alpha": "",
                "warnings": [],
            },
            "content_hash": "1b885e80ba526c78499720b41c3ac37330bb8436f764292f619cc265a3f07f11",
            "size_bytes": 640,
            "created_at": "2026-12-03T16:31:04.534170Z",
            "preview_url": "/v1/datasets/2bd11507-c44f-4b05-a1a3-d3e17e03a63d/preview.png",
            "key": "env:team-a",
        },
        200: {
            "id": "2bd11507-c44f-4b05-a1a3-d3e17e03a63d",
            "name": "points",
            "format": "npz",
            "info": {
                "kind": "points",
                "shape": [2],
                "num_classes": 0,
                "class_names": [],
                "size": 64,
                "description": "uploaded .npz: 64 rows of dimension 2 (float32, stored as float32)",
                "source_dtype": "float32",
                "source_range": [-2.32503080368042, 2.002392530441284],
                "alpha": "",
                "warnings": [],
            },
            "content_hash": "1b885e80ba526c78499720b41c3ac37330bb8436f764292f619cc265a3f07f11",
            "size_bytes": 640,
            "created_at": "2026-12-03T16:31:04.534170Z",
            "preview_url": "/v1/datasets/2bd11507-c44f-4b05-a1a3-d3e17e03a63d/preview.png",
            "key": "env:team-a",
        },
    },
    ("get", "/v1/datasets"): {
        200: {
            "datasets": [
                {
                    "id": "2bd11507-c44f-4b05-a1a3-d3e17e03a63d",
                    "name": "points",
                    "format": "npz",
                    "info": {
                        "kind": "points",
                        "shape": [2],
                        "num_classes": 0,
                        "class_names": [],
                        "size": 64,
                        "description": "uploaded .npz: 64 rows of dimension 2 (float32, stored as float32)",
                        "source_dtype": "float32",
                        "source_range": [-2.32503080368042, 2.002392530441284],
                        "alpha": "",
                        "warnings": [],
                    },
                    "content_hash": "1b885e80ba526c78499720b41c3ac37330bb8436f764292f619cc265a3f07f11",
                    "size_bytes": 640,
                    "created_at": "2026-12-03T16:31:04.534170Z",
                    "preview_url": "/v1/datasets/2bd11507-c44f-4b05-a1a3-d3e17e03a63d/preview.png",
                    "key": "env:team-a",
                }
            ],
            "next_cursor": None,
        }
    },
    ("get", "/v1/datasets/{dataset_id}"): {
        200: {
            "id": "2bd11507-c44f-4b05-a1a3-d3e17e03a63d",
            "name": "points",
            "format": "npz",
            "info": {
                "kind": "points",
                "shape": [2],
                "num_classes": 0,
                "class_names": [],
                "size": 64,
                "description": "uploaded .npz: 64 rows of dimension 2 (float32, stored as float32)",
                "source_dtype": "float32",
                "source_range": [-2.32503080368042, 2.002392530441284],
                "alpha": "",
                "warnings": [],
            },
            "content_hash": "1b885e80ba526c78499720b41c3ac37330bb8436f764292f619cc265a3f07f11",
            "size_bytes": 640,
            "created_at": "2026-12-03T16:31:04.534170Z",
            "preview_url": "/v1/datasets/2bd11507-c44f-4b05-a1a3-d3e17e03a63d/preview.png",
            "key": "env:team-a",
        }
    },
    ("post", "/v1/jobs/{job_id}/generate"): {
        202: {
            "id": "af0fea64-5cb2-4266-8cc8-1de351443da9",
            "status": "queued",
            "url": "/v1/generations/af0fea64-5cb2-4266-8cc8-1de351443da9",
        }
    },
    ("get", "/v1/generations/{generation_id}"): {
        200: {
            "id": "af0fea64-5cb2-4266-8cc8-1de351443da9",
            "job_id": "0c5a2a92-833a-446e-9068-3b371795f7b6",
            "status": "queued",
            "params": {"count": 4, "seed": 0, "step": 5, "format": "npy", "ema": True},
            "error": None,
            "media_type": None,
            "result_url": None,
            "expires_at": None,
            "created_at": "2026-12-03T16:31:04.594862Z",
            "started_at": None,
            "finished_at": None,
            "key": "env:team-a",
        }
    },
    ("post", "/v1/studies"): {
        201: {
            "id": "edc06c39-84b2-447c-8115-ed5f7c66f033",
            "name": "three-losses",
            "status": "queued",
            "job_count": 2,
            "counts": {"queued": 2},
            "progress": {"steps_done": 0, "steps_total": 10, "fraction": 0.0, "jobs_final": 0, "jobs_total": 2},
            "created_at": "2026-12-03T16:31:07.769118Z",
            "updated_at": "2026-12-03T16:31:07.769118Z",
            "cancelled_at": None,
            "spec": {
                "name": "three-losses",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 8, "depth": 1, "spectral_norm": False},
                "losses": ["nsgan", "wgan-gp"],
                "seeds": 1,
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": None,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 10, "samples": 500, "checkpoint": 1000},
                "overrides": {},
                "grid": [],
                "priority": None,
                "tags": {},
            },
            "jobs": [
                {
                    "id": "3c7bd096-a46e-4081-9f0d-6fc97807e3f2",
                    "loss": "nsgan",
                    "point": {},
                    "seed": 0,
                    "status": "queued",
                    "step": 0,
                    "total_steps": 5,
                },
                {
                    "id": "56647491-7ecf-42c2-ae9c-1ae5aa3f35d1",
                    "loss": "wgan-gp",
                    "point": {},
                    "seed": 0,
                    "status": "queued",
                    "step": 0,
                    "total_steps": 5,
                },
            ],
            "data_kind": "points",
            "measures": ["modes_covered", "hq_fraction", "reverse_kl"],
            "comparison": [
                {
                    "loss": "nsgan",
                    "point": {},
                    "runs": 1,
                    "finished": 0,
                    "failed": 0,
                    "statuses": {"queued": 1},
                    "quality": {
                        "modes_covered": {"mean": None, "std": None, "n": 0},
                        "hq_fraction": {"mean": None, "std": None, "n": 0},
                        "reverse_kl": {"mean": None, "std": None, "n": 0},
                    },
                    "steps_to_threshold": {
                        "modes_covered": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 8.0,
                            "rule": "modes_covered ≥ 8 (every mode)",
                        },
                        "hq_fraction": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 0.5,
                            "rule": "hq_fraction ≥ 0.5",
                        },
                        "reverse_kl": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 0.1,
                            "rule": "reverse_kl ≤ 0.1",
                        },
                    },
                    "wall_seconds": {"mean": None, "std": None, "n": 0},
                    "cpu_seconds": {"mean": None, "std": None, "n": 0},
                    "gpu_seconds": {"mean": None, "std": None, "n": 0},
                    "stability": {
                        "loss_g_spread_last_quarter": {"mean": None, "std": None, "n": 0},
                        "loss_g_std_last_quarter": {"mean": None, "std": None, "n": 0},
                        "vanishing_grad_fraction": {"mean": None, "std": None, "n": 0},
                        "vanishing_grad_fraction_relative": {"mean": None, "std": None, "n": 0},
                        "mode_oscillation": {"mean": None, "std": None, "n": 0},
                        "collapse_events": 0,
                        "divergence_events": 0,
                    },
                },
                {
                    "loss": "wgan-gp",
                    "point": {},
                    "runs": 1,
                    "finished": 0,
                    "failed": 0,
                    "statuses": {"queued": 1},
                    "quality": {
                        "modes_covered": {"mean": None, "std": None, "n": 0},
                        "hq_fraction": {"mean": None, "std": None, "n": 0},
                        "reverse_kl": {"mean": None, "std": None, "n": 0},
                    },
                    "steps_to_threshold": {
                        "modes_covered": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 8.0,
                            "rule": "modes_covered ≥ 8 (every mode)",
                        },
                        "hq_fraction": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 0.5,
                            "rule": "hq_fraction ≥ 0.5",
                        },
                        "reverse_kl": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 0,
                            "threshold": 0.1,
                            "rule": "reverse_kl ≤ 0.1",
                        },
                    },
                    "wall_seconds": {"mean": None, "std": None, "n": 0},
                    "cpu_seconds": {"mean": None, "std": None, "n": 0},
                    "gpu_seconds": {"mean": None, "std": None, "n": 0},
                    "stability": {
                        "loss_g_spread_last_quarter": {"mean": None, "std": None, "n": 0},
                        "loss_g_std_last_quarter": {"mean": None, "std": None, "n": 0},
                        "vanishing_grad_fraction": {"mean": None, "std": None, "n": 0},
                        "vanishing_grad_fraction_relative": {"mean": None, "std": None, "n": 0},
                        "mode_oscillation": {"mean": None, "std": None, "n": 0},
                        "collapse_events": 0,
                        "divergence_events": 0,
                    },
                },
            ],
        },
        200: {
            "valid": True,
            "spec": {
                "name": "three-losses",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 8, "depth": 1, "spectral_norm": False},
                "losses": ["nsgan", "wgan-gp"],
                "seeds": 1,
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": None,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 10, "samples": 500, "checkpoint": 1000},
                "overrides": {},
                "grid": [],
                "priority": None,
                "tags": {},
            },
            "job_count": 2,
        },
    },
    ("get", "/v1/studies"): {
        200: {
            "studies": [
                {
                    "id": "edc06c39-84b2-447c-8115-ed5f7c66f033",
                    "name": "three-losses",
                    "status": "queued",
                    "job_count": 2,
                    "counts": {"queued": 2},
                    "progress": {"steps_done": 0, "steps_total": 10, "fraction": 0.0, "jobs_final": 0, "jobs_total": 2},
                    "created_at": "2026-12-03T16:31:07.769118Z",
                    "updated_at": "2026-12-03T16:31:07.769118Z",
                    "cancelled_at": None,
                }
            ],
            "next_cursor": None,
        }
    },
    ("get", "/v1/studies/{study_id}"): {
        200: {
            "id": "edc06c39-84b2-447c-8115-ed5f7c66f033",
            "name": "three-losses",
            "status": "succeeded",
            "job_count": 2,
            "counts": {"succeeded": 2},
            "progress": {"steps_done": 10, "steps_total": 10, "fraction": 1.0, "jobs_final": 2, "jobs_total": 2},
            "created_at": "2026-12-03T16:31:07.769118Z",
            "updated_at": "2026-12-03T16:31:07.769118Z",
            "cancelled_at": None,
            "spec": {
                "name": "three-losses",
                "dataset": {"builtin": "ring8", "id": None, "resize": None},
                "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 8, "depth": 1, "spectral_norm": False},
                "losses": ["nsgan", "wgan-gp"],
                "seeds": 1,
                "training": {
                    "steps": 5,
                    "batch_size": 8,
                    "seed": 0,
                    "ema_decay": 0.999,
                    "pack": 1,
                    "sample_count": None,
                    "device": "auto",
                    "max_attempts": 3,
                    "watch": {
                        "action": "report",
                        "collapse": True,
                        "collapse_drop": 0.5,
                        "collapse_floor": 0.25,
                        "patience": 3,
                        "warmup_steps": 200,
                        "divergence": True,
                        "vanishing_steps": 500,
                        "vanishing_grad": 0.1,
                    },
                },
                "every": {"metrics": 10, "samples": 500, "checkpoint": 1000},
                "overrides": {},
                "grid": [],
                "priority": None,
                "tags": {},
            },
            "jobs": [
                {
                    "id": "3c7bd096-a46e-4081-9f0d-6fc97807e3f2",
                    "loss": "nsgan",
                    "point": {},
                    "seed": 0,
                    "status": "succeeded",
                    "step": 5,
                    "total_steps": 5,
                },
                {
                    "id": "56647491-7ecf-42c2-ae9c-1ae5aa3f35d1",
                    "loss": "wgan-gp",
                    "point": {},
                    "seed": 0,
                    "status": "succeeded",
                    "step": 5,
                    "total_steps": 5,
                },
            ],
            "data_kind": "points",
            "measures": ["modes_covered", "hq_fraction", "reverse_kl"],
            "comparison": [
                {
                    "loss": "nsgan",
                    "point": {},
                    "runs": 1,
                    "finished": 1,
                    "failed": 0,
                    "statuses": {"succeeded": 1},
                    "quality": {
                        "modes_covered": {"mean": 0.0, "std": None, "n": 1},
                        "hq_fraction": {"mean": 0.0, "std": None, "n": 1},
                        "reverse_kl": {"mean": 2.0794415416798357, "std": None, "n": 1},
                    },
                    "steps_to_threshold": {
                        "modes_covered": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 1,
                            "threshold": 8.0,
                            "rule": "modes_covered ≥ 8 (every mode)",
                        },
                        "hq_fraction": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 1,
                            "threshold": 0.5,
                            "rule": "hq_fraction ≥ 0.5",
                        },
                        "reverse_kl": {
                            "mean": None,
                            "std": None,
                            "reached": 0,
                            "n": 1,
                            "threshold": 0.1,
                            "rule": "reverse_kl ≤ 0.1",
                        },
                    },
                    "wall_seconds": {"mean": 0.161288, "std": None, "n": 1},
                    "cpu_seconds": {"mean": 0.07980714300000002, "std": None, "n": 1},
                    "gpu_seconds": {"mean": None, "std": None, "n": 0},
                    "stability": {
                        "loss_g_spread_last_quarter": {"mean": None, "std": None, "n": 0},
                        "loss_g_std_last_quarter": {"mean": None, "std": None, "n": 0},
                        "vanishing_grad_fraction": {"mean": 0.0, "std": None, "n": 1},
                        "vanishing_grad_fraction_relative": {"mean": 0.0, "std": None, "n": 1},
                        "mode_oscillation": {"mean": None, "std": None, "n": 0},
                        "collapse_events": 0,
                        "divergence_events": 0,
                    },
                }
            ],
        }
    },
    ("get", "/v1/studies/{study_id}/curves"): {
        200: {
            "names": ["loss_g"],
            "curves": {
                "loss_g": [
                    {
                        "loss": "nsgan",
                        "point": {},
                        "runs": 1,
                        "steps": [5],
                        "mean": [0.4687522351741791],
                        "std": [None],
                        "min": [0.4687522351741791],
                        "max": [0.4687522351741791],
                        "count": [1],
                    },
                    {
                        "loss": "wgan-gp",
                        "point": {},
                        "runs": 1,
                        "steps": [5],
                        "mean": [-0.5323405265808105],
                        "std": [None],
                        "min": [-0.5323405265808105],
                        "max": [-0.5323405265808105],
                        "count": [1],
                    },
                ]
            },
        }
    },
    ("post", "/v1/keys"): {
        201: {
            "prefix": "gf_r0wgk4z9",
            "owner": "team-a",
            "name": "ci",
            "scopes": ["read"],
            "created_at": "2026-12-03T16:31:16.043635Z",
            "expires_at": "2027-01-02T16:31:16.043478Z",
            "last_used_at": None,
            "revoked_at": None,
            "revoked": False,
            "active": True,
            "parent_prefix": None,
            "key": "gf_r0wgk4z9_Q5od8OOXL_ZOAwaHwUhL-BwqQmcJzUM9jmp9zVkTvys",
        }
    },
    ("get", "/v1/keys"): {
        200: {
            "keys": [
                {
                    "prefix": "gf_r0wgk4z9",
                    "owner": "team-a",
                    "name": "ci",
                    "scopes": ["read"],
                    "created_at": "2026-12-03T16:31:16.043635Z",
                    "expires_at": "2027-01-02T16:31:16.043478Z",
                    "last_used_at": None,
                    "revoked_at": None,
                    "revoked": False,
                    "active": True,
                    "parent_prefix": None,
                }
            ]
        }
    },
    ("delete", "/v1/keys/{prefix}"): {
        200: {
            "prefix": "gf_r0wgk4z9",
            "owner": "team-a",
            "name": "ci",
            "scopes": ["read"],
            "created_at": "2026-12-03T16:31:16.043635Z",
            "expires_at": "2027-01-02T16:31:16.043478Z",
            "last_used_at": None,
            "revoked_at": "2026-12-03T16:31:16.081913Z",
            "revoked": True,
            "active": False,
            "parent_prefix": None,
            "also_revoked": [],
        }
    },
    ("get", "/v1/whoami"): {
        200: {
            "owner": "team-a",
            "key": "env:team-a",
            "prefix": None,
            "scopes": ["read", "submit", "admin"],
            "expires_at": None,
            "auth": True,
        }
    },
    ("get", "/v1/quota"): {
        200: {
            "owner": "team-a",
            "quotas": {
                "running_jobs": 8,
                "queued_jobs": 1000,
                "steps_per_job": 1000000,
                "stored_bytes": 107374182400,
                "uploads_per_hour": 60,
                "max_priority": 50,
            },
            "usage": {
                "running_jobs": 0,
                "queued_jobs": 0,
                "stored_bytes": 8580,
                "uploads_last_hour": 0,
                "upload_retry_after_seconds": None,
            },
        }
    },
    ("get", "/healthz"): {200: {"status": "ok"}},
    ("get", "/readyz"): {
        200: {"status": "ready", "checks": {"store": "ok", "schema": "ok", "broker": "ok"}},
        503: {"status": "not ready", "checks": {"store": "ok", "schema": "ok", "broker": "error: OperationalError"}},
    },
}

# A study cancelled while its jobs were queued; the catalog with one entry of each kind.
RESPONSES.update(
    {
        ("post", "/v1/studies/{study_id}/cancel"): {
            202: {
                "id": "edc06c39-84b2-447c-8115-ed5f7c66f033",
                "name": "three-losses",
                "status": "cancelled",
                "job_count": 2,
                "counts": {"cancelled": 2},
                "progress": {"steps_done": 0, "steps_total": 10, "fraction": 0.0, "jobs_final": 2, "jobs_total": 2},
                "created_at": "2026-12-03T16:31:07.769118Z",
                "updated_at": "2026-12-03T16:31:08.102334Z",
                "cancelled_at": "2026-12-03T16:31:08.102334Z",
                "spec": {
                    "name": "three-losses",
                    "dataset": {"builtin": "ring8", "id": None, "resize": None},
                    "architecture": {"name": "mlp", "latent_dim": 2, "hidden": 8, "depth": 1, "spectral_norm": False},
                    "losses": ["nsgan", "wgan-gp"],
                    "seeds": 1,
                    "training": {
                        "steps": 5,
                        "batch_size": 8,
                        "seed": 0,
                        "ema_decay": 0.999,
                        "pack": 1,
                        "sample_count": None,
                        "device": "auto",
                        "max_attempts": 3,
                        "watch": {
                            "action": "report",
                            "collapse": True,
                            "collapse_drop": 0.5,
                            "collapse_floor": 0.25,
                            "patience": 3,
                            "warmup_steps": 200,
                            "divergence": True,
                            "vanishing_steps": 500,
                            "vanishing_grad": 0.1,
                        },
                    },
                    "every": {"metrics": 10, "samples": 500, "checkpoint": 1000},
                    "overrides": {},
                    "grid": [],
                    "priority": None,
                    "tags": {},
                },
                "jobs": [
                    {
                        "id": "3c7bd096-a46e-4081-9f0d-6fc97807e3f2",
                        "loss": "nsgan",
                        "point": {},
                        "seed": 0,
                        "status": "queued",
                        "step": 0,
                        "total_steps": 5,
                    },
                    {
                        "id": "56647491-7ecf-42c2-ae9c-1ae5aa3f35d1",
                        "loss": "wgan-gp",
                        "point": {},
                        "seed": 0,
                        "status": "queued",
                        "step": 0,
                        "total_steps": 5,
                    },
                ],
                "data_kind": "points",
                "measures": ["modes_covered", "hq_fraction", "reverse_kl"],
                "comparison": [
                    {
                        "loss": "nsgan",
                        "point": {},
                        "runs": 1,
                        "finished": 0,
                        "failed": 0,
                        "statuses": {"queued": 1},
                        "quality": {
                            "modes_covered": {"mean": None, "std": None, "n": 0},
                            "hq_fraction": {"mean": None, "std": None, "n": 0},
                            "reverse_kl": {"mean": None, "std": None, "n": 0},
                        },
                        "steps_to_threshold": {
                            "modes_covered": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 8.0,
                                "rule": "modes_covered ≥ 8 (every mode)",
                            },
                            "hq_fraction": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 0.5,
                                "rule": "hq_fraction ≥ 0.5",
                            },
                            "reverse_kl": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 0.1,
                                "rule": "reverse_kl ≤ 0.1",
                            },
                        },
                        "wall_seconds": {"mean": None, "std": None, "n": 0},
                        "cpu_seconds": {"mean": None, "std": None, "n": 0},
                        "gpu_seconds": {"mean": None, "std": None, "n": 0},
                        "stability": {
                            "loss_g_spread_last_quarter": {"mean": None, "std": None, "n": 0},
                            "loss_g_std_last_quarter": {"mean": None, "std": None, "n": 0},
                            "vanishing_grad_fraction": {"mean": None, "std": None, "n": 0},
                            "vanishing_grad_fraction_relative": {"mean": None, "std": None, "n": 0},
                            "mode_oscillation": {"mean": None, "std": None, "n": 0},
                            "collapse_events": 0,
                            "divergence_events": 0,
                        },
                    },
                    {
                        "loss": "wgan-gp",
                        "point": {},
                        "runs": 1,
                        "finished": 0,
                        "failed": 0,
                        "statuses": {"queued": 1},
                        "quality": {
                            "modes_covered": {"mean": None, "std": None, "n": 0},
                            "hq_fraction": {"mean": None, "std": None, "n": 0},
                            "reverse_kl": {"mean": None, "std": None, "n": 0},
                        },
                        "steps_to_threshold": {
                            "modes_covered": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 8.0,
                                "rule": "modes_covered ≥ 8 (every mode)",
                            },
                            "hq_fraction": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 0.5,
                                "rule": "hq_fraction ≥ 0.5",
                            },
                            "reverse_kl": {
                                "mean": None,
                                "std": None,
                                "reached": 0,
                                "n": 0,
                                "threshold": 0.1,
                                "rule": "reverse_kl ≤ 0.1",
                            },
                        },
                        "wall_seconds": {"mean": None, "std": None, "n": 0},
                        "cpu_seconds": {"mean": None, "std": None, "n": 0},
                        "gpu_seconds": {"mean": None, "std": None, "n": 0},
                        "stability": {
                            "loss_g_spread_last_quarter": {"mean": None, "std": None, "n": 0},
                            "loss_g_std_last_quarter": {"mean": None, "std": None, "n": 0},
                            "vanishing_grad_fraction": {"mean": None, "std": None, "n": 0},
                            "vanishing_grad_fraction_relative": {"mean": None, "std": None, "n": 0},
                            "mode_oscillation": {"mean": None, "std": None, "n": 0},
                            "collapse_events": 0,
                            "divergence_events": 0,
                        },
                    },
                ],
            }
        },
        ("get", "/v1/catalog"): {
            200: {
                "losses": {
                    "minimax": {
                        "paper": "Goodfellow et al. 2014 (arXiv 1406.2661), the saturating generator loss.",
                        "defaults": {
                            "optimizer": "adam",
                            "lr_g": 0.0002,
                            "lr_d": 0.0002,
                            "betas": [0.5, 0.999],
                            "n_critic": 1,
                            "r1_gamma": 0.0,
                            "r1_every": 16,
                        },
                        "parameters": {
                            "optimizer": {
                                "default": "adam",
                                "enum": ["adam", "rmsprop"],
                                "title": "Optimizer",
                                "type": "string",
                            },
                            "lr_g": {"default": 0.0002, "exclusiveMinimum": 0, "title": "Lr G", "type": "number"},
                            "lr_d": {"default": 0.0002, "exclusiveMinimum": 0, "title": "Lr D", "type": "number"},
                            "betas": {
                                "default": [0.5, 0.999],
                                "maxItems": 2,
                                "minItems": 2,
                                "prefixItems": [
                                    {"exclusiveMaximum": 1, "minimum": 0, "type": "number"},
                                    {"exclusiveMaximum": 1, "minimum": 0, "type": "number"},
                                ],
                                "title": "Betas",
                                "type": "array",
                            },
                            "n_critic": {
                                "default": 1,
                                "description": "D steps per G step",
                                "maximum": 100,
                                "minimum": 1,
                                "title": "N Critic",
                                "type": "integer",
                            },
                            "r1_gamma": {
                                "default": 0.0,
                                "description": "R1 penalty weight on real data (Mescheder et al. 2018); 0 = off",
                                "minimum": 0,
                                "title": "R1 Gamma",
                                "type": "number",
                            },
                            "r1_every": {
                                "default": 16,
                                "description": "lazy R1: apply every N D steps",
                                "maximum": 1000,
                                "minimum": 1,
                                "title": "R1 Every",
                                "type": "integer",
                            },
                        },
                    }
                },
                "architectures": {
                    "mlp": {
                        "paper": "Fully connected G and D, for 2-D points and tabular rows.",
                        "defaults": {"latent_dim": 2, "hidden": 512, "depth": 3, "spectral_norm": False},
                        "parameters": {
                            "latent_dim": {
                                "default": 2,
                                "maximum": 1024,
                                "minimum": 1,
                                "title": "Latent Dim",
                                "type": "integer",
                            },
                            "hidden": {
                                "default": 512,
                                "description": "units per hidden "
                                "layer (512 as in "
                                "the WGAN-GP toy "
                                "code; at 256 "
                                "grid25 kept "
                                "losing modes, "
                                "see "
                                "bench/ZOO_RESULTS.md)",
                                "maximum": 8192,
                                "minimum": 4,
                                "title": "Hidden",
                                "type": "integer",
                            },
                            "depth": {"default": 3, "maximum": 16, "minimum": 1, "title": "Depth", "type": "integer"},
                            "spectral_norm": {
                                "default": False,
                                "description": "spectral norm on every layer of D (Miyato et al. 2018)",
                                "title": "Spectral Norm",
                                "type": "boolean",
                            },
                        },
                        "init": "PyTorch default (Kaiming uniform), as the WGAN-GP toy code's Linear layers",
                        "discriminator_norm": {"default": "none", "gradient_penalty": "none"},
                    }
                },
                "datasets": {
                    "ring8": {
                        "kind": "points",
                        "shape": [2],
                        "num_classes": 8,
                        "class_names": [],
                        "size": 100000,
                        "description": "8 Gaussians at (cos 2πi/8, sin 2πi/8), std "
                        "0.01 (PacGAN protocol); label = mode",
                        "source_dtype": "",
                        "source_range": None,
                        "alpha": "",
                        "warnings": [],
                    }
                },
                "quality": {
                    "points": {
                        "measures": ["modes_covered", "hq_fraction", "reverse_kl"],
                        "description": "the built-in ring8 and grid25 (PacGAN protocol, on each snapshot's samples)",
                    },
                    "labelled_images": {
                        "measures": ["fd"],
                        "by_loss": {"cgan": ["class_accuracy"], "infogan": ["code_purity", "code_nmi"]},
                        "description": "fd: Fréchet distance (lower is "
                        "better) in the 64-d features of a "
                        "small classifier trained on the data "
                        "set itself (digits, or an upload "
                        "with labels), 500 generated against "
                        "up to 1,000 real images; "
                        "class_accuracy / code_purity by the "
                        "same classifier",
                    },
                    "inception": {
                        "measures": ["fid", "kid"],
                        "description": "fid and kid (Bińkowski et al. 2018, cubic "
                        "kernel) in the FID Inception-v3's pool3 "
                        "features, on every image data set, "
                        "reported for a job when the worker that "
                        "runs it has GANFORGE_INCEPTION_WEIGHTS set "
                        "(workers may differ, and this API process "
                        "cannot see theirs); 500 images on a GPU, "
                        "100 on a CPU (compare FIDs at equal counts "
                        "only)",
                        "source_of_truth": "a job's metrics (GET "
                        "/v1/jobs/{id}/metrics lists every "
                        "series its worker recorded) and each "
                        "of its samples' `evaluation` name the "
                        "figures its worker reported",
                    },
                },
                "watch": {
                    "collapse": {
                        "description": "mode dropping (PacGAN's modes metric): at "
                        "each snapshot after warmup_steps, the modes "
                        "holding the samples (2-D mixtures), the "
                        "Fréchet distance (images with one), or the "
                        "samples' mean pairwise distance over the "
                        "data's; patience snapshots in a row below "
                        "collapse_floor or collapse_drop of the run's "
                        "best",
                        "settings": ["warmup_steps", "collapse_floor", "collapse_drop", "patience"],
                    },
                    "divergence": {
                        "description": "a non-finite value, on every loss (the job "
                        "fails); on losses whose D can win, also D "
                        "winning completely with G's gradient "
                        "vanishing (Arjovsky & Bottou 2017): its "
                        "norm under vanishing_grad of its own scale "
                        "in the run (its largest while D was not "
                        "winning, never an absolute norm) at every "
                        "reading for vanishing_steps steps",
                        "settings": ["vanishing_grad", "vanishing_steps"],
                        "by_loss": {
                            "minimax": "non-finite values; D winning: mean "
                            "logit >= logit(0.99) on real and <= "
                            "logit(0.01) on fake (D's score is "
                            "the logit of real), with G's "
                            "gradient vanishing",
                            "nsgan": "non-finite values; D winning: mean "
                            "logit >= logit(0.99) on real and <= "
                            "logit(0.01) on fake (D's score is the "
                            "logit of real), with G's gradient "
                            "vanishing",
                            "dragan": "non-finite values; D winning on its "
                            "NS loss: mean logit >= logit(0.99) "
                            "on real and <= logit(0.01) on fake "
                            "(D's score is the logit of real), "
                            "with G's gradient vanishing",
                            "lsgan": "non-finite values; D winning: mean "
                            "outputs within 10% of |b - a| of "
                            "their targets b (real) and a (fake), "
                            "with G's gradient vanishing",
                            "hinge": "non-finite values; D winning: mean "
                            "real score >= 1 and fake <= -1 (both "
                            "margins met, D's loss 0), with G's "
                            "gradient vanishing",
                            "wgan": "non-finite values only: a critic's "
                            "score is an unbounded distance "
                            "estimate with no end to win at; weight "
                            "clipping (c = 0.01) makes G's gradient "
                            "norm ~1e-5 in a healthy run; the "
                            "estimate rises while the critic learns "
                            "and its scale is set by c and the "
                            "data: no bound to test it against",
                            "wgan-gp": "non-finite values only: a critic's "
                            "score is an unbounded distance "
                            "estimate with no end to win at; G's "
                            "gradient size is set by the "
                            "penalty's Lipschitz target, not by "
                            "the critic's confidence; the "
                            "estimate rises while the critic "
                            "learns: no bound to test it against",
                            "began": "non-finite values only: D is an "
                            "auto-encoder scoring reconstructions, "
                            "not a real/fake probability; its "
                            "balance term k_t is clipped to [0, 1] "
                            "by design",
                            "cgan": "as its base loss (loss.base)",
                            "infogan": "as its base loss (loss.base)",
                        },
                    },
                },
            }
        },
    }
)

# Webhooks (api/routes/webhooks.py): an endpoint whose receiver is down, so its deliveries failed.
RESPONSES.update(
    {
        ("post", "/v1/webhooks"): {
            201: {
                "id": "4301950a-dff9-4852-8677-7e2fb45625ef",
                "url": "https://hooks.example.com/ganforge",
                "events": ["job.status", "study.finished"],
                "description": "platform",
                "enabled": True,
                "disabled_reason": None,
                "created_at": "2026-12-03T16:45:34.017685Z",
                "failing_since": None,
                "secret": "whsec_H66ovFC/f+WlxNWAb0rN4kKSkOunDWYBY0hhikAdFf4=",
            }
        },
        ("get", "/v1/webhooks"): {
            200: {
                "webhooks": [
                    {
                        "id": "4301950a-dff9-4852-8677-7e2fb45625ef",
                        "url": "https://hooks.example.com/ganforge",
                        "events": ["job.status", "study.finished"],
                        "description": "platform",
                        "enabled": True,
                        "disabled_reason": None,
                        "created_at": "2026-12-03T16:45:34.017685Z",
                        "failing_since": "2026-12-03T16:45:34.442834Z",
                    }
                ],
                "next_cursor": None,
            }
        },
        ("get", "/v1/webhooks/{webhook_id}"): {
            200: {
                "id": "4301950a-dff9-4852-8677-7e2fb45625ef",
                "url": "https://hooks.example.com/ganforge",
                "events": ["job.status", "study.finished"],
                "description": "platform",
                "enabled": True,
                "disabled_reason": None,
                "created_at": "2026-12-03T16:45:34.017685Z",
                "failing_since": "2026-12-03T16:45:34.442834Z",
            }
        },
        ("delete", "/v1/webhooks/{webhook_id}"): {
            200: {
                "id": "4301950a-dff9-4852-8677-7e2fb45625ef",
                "url": "https://hooks.example.com/ganforge",
                "events": ["job.status", "study.finished"],
                "description": "platform",
                "enabled": True,
                "disabled_reason": None,
                "created_at": "2026-12-03T16:45:34.017685Z",
                "failing_since": "2026-12-03T16:45:55.068810Z",
            }
        },
        ("post", "/v1/webhooks/{webhook_id}/enable"): {
            200: {
                "id": "4301950a-dff9-4852-8677-7e2fb45625ef",
                "url": "https://hooks.example.com/ganforge",
                "events": ["job.status", "study.finished"],
                "description": "platform",
                "enabled": True,
                "disabled_reason": None,
                "created_at": "2026-12-03T16:45:34.017685Z",
                "failing_since": None,
            }
        },
        ("get", "/v1/webhooks/{webhook_id}/deliveries"): {
            200: {
                "deliveries": [
                    {
                        "id": "319522ee-b57f-4044-b2da-e3cbebd9769a",
                        "event_id": "msg_8466ede9f781d1d3c57d59a967e345fc",
                        "type": "job.status",
                        "status": "failed",
                        "attempts": 1,
                        "response_code": None,
                        "error": "ConnectError: [Errno 111] Connection refused",
                        "latency_ms": 5.020502999968812,
                        "created_at": "2026-12-03T16:45:51.581202Z",
                        "last_attempt_at": "2026-12-03T16:45:51.851083Z",
                        "next_attempt_at": "2026-12-03T16:45:57.681476Z",
                        "payload": {
                            "type": "job.status",
                            "timestamp": "2026-12-03T16:45:51.581202+00:00",
                            "data": {
                                "job_id": "c3065b8c-9c11-43ab-8c88-1a1b180cae18",
                                "study_id": None,
                                "seq": 7,
                                "from": "running",
                                "to": "succeeded",
                                "reason": "trained 5 steps in 1.1 s",
                                "attempt": 1,
                            },
                        },
                    }
                ],
                "next_cursor": "ATXfNwg5eNSXJTqvjm7wXMy-F_WPs6CZ8g",
            }
        },
        ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): {
            202: {
                "id": "11085333-391d-4d2d-b7be-eb367c32d737",
                "event_id": "msg_8466ede9f781d1d3c57d59a967e345fc",
                "type": "job.status",
                "status": "pending",
                "attempts": 0,
                "response_code": None,
                "error": None,
                "latency_ms": None,
                "created_at": "2026-12-03T16:45:54.986435Z",
                "last_attempt_at": None,
                "next_attempt_at": "2026-12-03T16:45:54.986435Z",
                "payload": {
                    "type": "job.status",
                    "timestamp": "2026-12-03T16:45:51.581202+00:00",
                    "data": {
                        "job_id": "c3065b8c-9c11-43ab-8c88-1a1b180cae18",
                        "study_id": None,
                        "seq": 7,
                        "from": "running",
                        "to": "succeeded",
                        "reason": "trained 5 steps in 1.1 s",
                        "attempt": 1,
                    },
                },
            }
        },
    }
)
