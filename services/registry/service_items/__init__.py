"""Service items (政务服务事项), their materials (申请材料), and the 免提交 statistics."""
