"""Applications (共享申请) and grants (授权): the sharing rules of 国发〔2016〕51号."""
