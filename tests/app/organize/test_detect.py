from pathlib import PurePath

import pytest

from app.organize.detect import (
    LABEL_RULES, MODALITY_RULES, PATIENT_RULES, REGION_RULES, anomaly_class, detect,
)


@pytest.mark.parametrize(
    "header, path, value, rule",
    [
        ({"Modality": "CT"}, "x/IM1.dcm", "CT", "dicom_modality_tag"),
        ({"Modality": "DX"}, "x/IM1.dcm", "XR", "dicom_modality_tag"),
        ({"Modality": "PT"}, "x/IM1.dcm", "PET", "dicom_modality_tag"),
        ({"Modality": "RG", "BodyPartExamined": "BREAST"}, "x/IM1.dcm", "MG", "dicom_modality_tag"),
        ({"StudyDescription": "IRM CEREBRALE"}, "x/IM1", "MR", "dicom_description"),
        ({}, "chest_xray/train/NORMAL/IM-0001-0001.jpeg", "XR", "folder_or_file_name"),
        ({}, "Dataset_BUSI_with_GT/benign/benign (1).png", "US", "folder_or_file_name"),
        ({}, "brain/sub-01_T1w.nii.gz", "MR", "folder_or_file_name"),
        ({}, "misc/scan.nii.gz", "MR", "file_format"),
        ({"RescaleIntercept": "-1024"}, "export/0001", "CT", "hounsfield_rescale"),
        # a mammogram by its view or storage class, whatever its Modality tag says (RG, DX, none)
        ({"Modality": "RG", "ViewPosition": "MLO"}, "x/IM1.dcm", "MG", "dicom_modality_tag"),
        ({"Modality": "DX", "ViewPosition": "PA"}, "x/IM1.dcm", "XR", "dicom_modality_tag"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2"}, "x/IM1.dcm", "MG", "dicom_modality_tag"),
        ({"Modality": "CT", "ViewPosition": "CC"}, "x/IM1.dcm", "CT", "dicom_modality_tag"),
        ({}, "Training/glioma/Tr-gl_0001.jpg", "MR", "brain_2d_image"),
        ({}, "misc/thing.xyz", "OT", "none"),
        # DICOM's other codes are kept as written (an OCT volume is no radiograph); dental X-rays are XR
        ({"Modality": "OPT"}, "oct/scan/1.dcm", "OPT", "dicom_modality_tag"),
        ({"Modality": "PX"}, "x/IM1.dcm", "XR", "dicom_modality_tag"),
        ({"Modality": "SC"}, "x/IM1.dcm", "OT", "none"),
    ],
)
def test_modality_rules(header: dict, path: str, value: str, rule: str) -> None:
    found = detect(MODALITY_RULES, header, PurePath(path), default="OT")
    assert (found.value, found.rule) == (value, rule)


@pytest.mark.parametrize(
    "header, path, value, rule",
    [
        ({"BodyPartExamined": "HEAD"}, "a/1.dcm", "brain", "dicom_body_part"),
        ({"BodyPartExamined": "CHEST"}, "a/1.dcm", "chest", "dicom_body_part"),
        ({"StudyDescription": "CT CRANE SANS INJECTION"}, "a/1.dcm", "brain", "dicom_description"),
        ({"StudyDescription": "CT Tête"}, "a/1.dcm", "brain", "dicom_description"),
        ({"StudyDescription": "CCT KOPF NATIV"}, "a/1.dcm", "brain", "dicom_description"),
        ({"SeriesDescription": "TORAX AXIAL 5mm"}, "a/1.dcm", "chest", "dicom_description"),
        ({"StudyDescription": "CT THORAX"}, "a/1.dcm", "chest", "dicom_description"),
        ({}, "chest_xray/PNEUMONIA/person1_bacteria_1.jpeg", "chest", "folder_or_file_name"),
        ({}, "bone_xray/fractured/p1.png", "bone", "folder_or_file_name"),
        ({}, "stuff/1.png", "unknown", "none"),
        ({"StudyDescription": "Thorax^1HEAD_NECK_PETCT"}, "a/1.dcm", "neck", "dicom_description"),
        ({"StudyDescription": "THYROID"}, "a/1.dcm", "neck", "dicom_description"),
        ({"StudyDescription": "ECOTOMOGRAFIA CODO IZQUIERDO"}, "a/1.dcm", "bone", "dicom_description"),
        ({"Modality": "MG"}, "a/1.dcm", "breast", "mammography"),
        ({"Modality": "RG", "ViewPosition": "XCCL"}, "a/1.dcm", "breast", "mammography"),
        ({"Modality": "DX", "ViewPosition": "AP"}, "a/1.dcm", "unknown", "none"),
        # the exam an ultrasound image's type names (a coded term, PS3.3 C.8.5.6.1.1); a gated NM study
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\TTE\\0001"}, "a/1.dcm", "cardiac", "dicom_image_type"),
        ({"Modality": "US", "ImageType": "DERIVED\\SECONDARY\\MUSCULOSKELETAL\\0001"}, "a/1.dcm", "bone",
         "dicom_image_type"),
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\ENDOVAGINAL"}, "a/1.dcm", "pelvis", "dicom_image_type"),
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\VASCULAR\\0001"}, "a/1.dcm", "unknown", "none"),
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\\\0001"}, "a/1.dcm", "unknown", "none"),
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\TTE", "StudyDescription": "THYROID"}, "a/1.dcm",
         "neck", "dicom_description"),  # what was written for the exam before the machine's preset
        ({"Modality": "NM", "ImageType": "ORIGINAL\\PRIMARY\\RECON GATED TOMO\\EMISSION"}, "a/1.dcm", "cardiac",
         "dicom_image_type"),
        ({"Modality": "NM", "ImageType": "DERIVED\\PRIMARY\\RECON TOMO\\EMISSION"}, "a/1.dcm", "unknown", "none"),
        ({"Modality": "CT", "ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"}, "a/1.dcm", "unknown", "none"),
        ({"Modality": "MR", "ImageType": "ORIGINAL\\PRIMARY\\CHEST"}, "a/1.dcm", "unknown", "none"),
        ({"Modality": "US", "ImageType": "ORIGINAL\\PRIMARY\\BREAST", "BodyPartExamined": "ABDOMEN"}, "a/1.dcm",
         "abdomen", "dicom_body_part"),
        ({}, "kaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.tif", "brain", "dataset_file_name"),
        # descriptions as hospitals write them, and DICOM's defined body-part terms
        ({"StudyDescription": "CTA PULMONARY ARTERIES (CTPA)"}, "a/1.dcm", "chest", "dicom_description"),
        ({"StudyDescription": "MR PELVIC FLOOR", "SeriesDescription": "T2 TSE SAG"}, "a/1.dcm", "pelvis",
         "dicom_description"),
        ({"StudyDescription": "MRCP"}, "a/1.dcm", "abdomen", "dicom_description"),
        ({"StudyDescription": "CT ORBITS W/O"}, "a/1.dcm", "brain", "dicom_description"),
        ({"StudyDescription": "Echocardiogram"}, "a/1.dcm", "cardiac", "dicom_description"),
        ({"StudyDescription": "CCTA CALCIUM SCORE"}, "a/1.dcm", "cardiac", "dicom_description"),
        # a spine level is no chest (was: chest, whose words are looked up first)
        ({"SeriesDescription": "T2 TSE THORACIC SPINE"}, "a/1.dcm", "spine", "dicom_description"),
        ({"StudyDescription": "CT CHEST", "SeriesDescription": "T-SPINE BONE"}, "a/1.dcm", "chest",
         "dicom_description"),
        # German, French, Italian, Spanish, Dutch and Portuguese requests
        ({"StudyDescription": "MRT LWS nativ"}, "a/1.dcm", "spine", "dicom_description"),
        ({"BodyPartExamined": "Knie"}, "a/1.dcm", "bone", "dicom_body_part"),  # written freely, not a defined term
        ({"BodyPartExamined": "SCHAEDEL"}, "a/1.dcm", "brain", "dicom_body_part"),
        ({"StudyDescription": "HWS in 2 Ebenen"}, "a/1.dcm", "spine", "dicom_description"),
        ({"StudyDescription": "MRT Knie rechts"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "Hüfte links a.p."}, "a/1.dcm", "pelvis", "dicom_description"),
        ({"StudyDescription": "CT Oberbauch"}, "a/1.dcm", "abdomen", "dicom_description"),
        ({"StudyDescription": "Sono Schilddrüse"}, "a/1.dcm", "neck", "dicom_description"),
        ({"StudyDescription": "IRM EPAULE DROITE"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "RADIO HANCHE"}, "a/1.dcm", "pelvis", "dicom_description"),
        ({"StudyDescription": "TC TORACE CON MDC"}, "a/1.dcm", "chest", "dicom_description"),
        ({"StudyDescription": "TC ADDOME COMPLETO"}, "a/1.dcm", "abdomen", "dicom_description"),
        ({"StudyDescription": "RM GINOCCHIO SX"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "RX HOMBRO DERECHO"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "MRI BEKKEN"}, "a/1.dcm", "pelvis", "dicom_description"),
        ({"StudyDescription": "RM JOELHO ESQUERDO"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "XR FINGERS 3V LT"}, "a/1.dcm", "bone", "dicom_description"),
        ({"StudyDescription": "MRI LUMBOSACRAL"}, "a/1.dcm", "spine", "dicom_description"),
        ({"SeriesDescription": "T2 SPIN ECHO AX"}, "a/1.dcm", "unknown", "none"),  # an MR sequence, not a heart
        ({"BodyPartExamined": "SSPINE"}, "a/1.dcm", "spine", "dicom_body_part"),
        ({"BodyPartExamined": "Lower limb"}, "a/1.dcm", "bone", "dicom_body_part"),
        ({"BodyPartExamined": "ORBIT"}, "a/1.dcm", "brain", "dicom_body_part"),
        # public datasets' own folder and file names (CamelCase, a number run into the word)
        ({}, "Task01_BrainTumour/imagesTr/BRATS_001.nii.gz", "brain", "folder_or_file_name"),
        ({}, "Task02_Heart/imagesTr/la_003.nii.gz", "cardiac", "folder_or_file_name"),
        ({}, "Task08_HepaticVessel/imagesTr/hepaticvessel_001.nii.gz", "abdomen", "folder_or_file_name"),
        ({}, "data/BraTS2021_00000/BraTS2021_00000_flair.nii.gz", "brain", "folder_or_file_name"),
        ({}, "NSCLC-Radiomics/LUNG1-001/09-18-2008-StudyID-69331/0.000000-NA-82046/1-001.dcm", "chest",
         "folder_or_file_name"),
        ({}, "kits19/data/case_00000/imaging.nii.gz", "abdomen", "folder_or_file_name"),
        ({}, "IXI-T1/IXI002-Guys-0828-T1.nii.gz", "brain", "folder_or_file_name"),
        ({}, "export/CT2/series3/IM0001.dcm", "unknown", "none"),  # "CT2" is no "CT"-region word
    ],
)
def test_region_rules(header: dict, path: str, value: str, rule: str) -> None:
    found = detect(REGION_RULES, header, PurePath(path))
    assert (found.value, found.rule) == (value, rule)


@pytest.mark.parametrize(
    "path, source_label, anomaly",
    [
        ("chest_xray/train/NORMAL/IM-1.jpeg", "NORMAL", "normal"),
        ("chest_xray/train/PNEUMONIA/person1_virus_6.jpeg", "PNEUMONIA", "infection"),
        ("Training/glioma/Tr-gl_0010.jpg", "glioma", "tumor"),
        ("Training/notumor/Tr-no_0010.jpg", "notumor", "normal"),
        ("COVID-19_Radiography_Dataset/Lung_Opacity/images/Lung_Opacity-1.png", "Lung_Opacity", "consolidation"),
        ("COVID-19_Radiography_Dataset/Viral Pneumonia/images/x.png", "Viral Pneumonia", "infection"),
        ("bone/not fractured/1.jpg", "not fractured", "normal"),
        ("Dataset_BUSI_with_GT/malignant/malignant (3).png", "malignant", "tumor"),
    ],
)
def test_label_rules_keep_the_dataset_name_and_map_the_class(path: str, source_label: str, anomaly: str) -> None:
    found = detect(LABEL_RULES, {}, PurePath(path), default="")
    assert found.value == source_label
    assert anomaly_class(found.value) == anomaly


def test_no_label_folder_means_unlabeled() -> None:
    assert detect(LABEL_RULES, {}, PurePath("unlabeled/chest_xray/img_1.png"), default="").value == ""


@pytest.mark.parametrize(
    "header, name, value",
    [
        ({"PatientID": "12345"}, "x/IM1.dcm", "dicom:12345"),
        ({}, "PNEUMONIA/person42_bacteria_7.jpeg", "kaggle_pneumonia_person:person42"),
        ({}, "NORMAL/NORMAL2-IM-1427-0001.jpeg", "kaggle_pneumonia_im:IM-1427"),
        ({}, "images/00000013_005.png", "nih_chestxray14:00000013"),
        ({}, "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.tif", "tcga_case:TCGA_CS_4941"),
        ({}, "sub-07/anat/sub-07_T1w.nii.gz", "bids_subject:sub-07"),
        # a case folder whose files are its sequences: BraTS's four scans of one patient
        ({}, "BraTS2021_00000/BraTS2021_00000_flair.nii.gz", "case_folder:BraTS2021_00000"),
        ({}, "BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz", "case_folder:BraTS2021_00000"),
        ({}, "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz", "case_folder:BraTS-GLI-00000-000"),
        ({}, "chest_xray2/chest_xray2_001.png", "unknown"),  # a running number, not a sequence
        ({}, "images/images_flair.png", "unknown"),  # no case id in the folder's name
        ({}, "IXI-T2/IXI002-Guys-0828-T2.nii.gz", "ixi_subject:IXI002"),  # the same subject as IXI-T1/IXI002-...
        ({}, "ADNI/ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418193713091_1_S13408_I13722.nii", "adni_subject:002_S_0295"),
        ({}, "disc1/OAS1_0001_MR1/RAW/OAS1_0001_MR1_mpr-1_anon.nii.gz", "oasis_subject:OAS1_0001"),
        ({}, "OAS1_0001_MR2/PROCESSED/scan.nii.gz", "oasis_subject:OAS1_0001"),  # a second session, same subject
    ],
)
def test_patient_rules(header: dict, name: str, value: str) -> None:
    assert detect(PATIENT_RULES, header, PurePath(name)).value == value


@pytest.mark.parametrize("header, regions", [
    ({"StudyDescription": "CT ABD AND PELVIS", "ProtocolName": "CHEST PELVIS"}, ["abdomen", "chest", "pelvis"]),
    ({"BodyPartExamined": "CHEST_TO_PELVIS"}, ["abdomen", "chest", "pelvis"]),
    ({"StudyDescription": "CT CHEST WO IV CONT", "BodyPartExamined": "CHEST"}, ["chest"]),
    ({"StudyDescription": "Thorax^1HEAD_NECK_PETCT"}, ["brain", "chest", "neck"]),
    ({"BodyPartExamined": "CHESTABDOMEN"}, ["abdomen", "chest"]),
])
def test_every_region_a_description_names_is_kept(header: dict, regions: list[str]) -> None:
    from app.organize.detect import body_part_term, described_regions, description_keywords

    assert described_regions(header) == regions
    kept = {k: description_keywords(v) for k, v in header.items() if k != "BodyPartExamined"}  # as scanned
    kept.update({k: body_part_term(v) for k, v in header.items() if k == "BodyPartExamined"})
    assert described_regions(kept) == regions
