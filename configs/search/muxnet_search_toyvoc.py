# Tri-objective MUXNet search with accuracy from training: SSDLite + candidate trained from
# scratch on the embedded toy VOC set with the default 300-iteration schedule (VOC mAP), params
# and MAdds; MOEA/D-PBI with the surrogate pre-screening 4 candidates per slot. Shorter trainings
# carry no signal on this set (measured on 2 CPU cores: 40 iterations gave mAP 0.003-0.009 for
# five random candidates, 150 iterations gave MUXNet-xs 0.002, while 300 give it 0.61-0.65).
# Each evaluation is then 2.5-5 minutes on 2 CPU cores (about 30 s on a GPU, 0.1 s/iteration),
# so this is a GPU job: raise --budget and spread the evaluations with --workers or
# --ray-address.
#   python tools/dataset_converters/make_toy_data.py --task det
#   python tools/search/search_muxnet.py configs/search/muxnet_search_toyvoc.py --work-dir DIR
search = dict(
    objectives=('acc', 'params', 'madds'),
    evaluator=dict(type='train', task='det',
                   cfg_options={'train_dataloader.num_workers': 0,
                                'train_dataloader.persistent_workers': False,
                                'val_dataloader.num_workers': 0,
                                'val_dataloader.persistent_workers': False}),
    algorithm='moead',
    pop_size=8,
    budget=16,
    bounds=dict(acc=(1.0, 0.0), params=(1.0, 5.5), madds=(25.0, 650.0)),
    surrogate_candidates=4)
