"""Test data: request bodies built by polyfactory with realistic Chinese values, and principals.

A test names only what it is about; everything else is plausible and valid::

    body = ResourceCreateFactory.build(share=conditional_share())
    admin = person(dept, Role.DATA_ADMIN)
    client = system(consumer_dept)
"""

from __future__ import annotations

import secrets
from typing import ClassVar

from faker import Faker
from polyfactory import PostGenerated, Require, Use
from polyfactory.factories.pydantic_factory import ModelFactory

from services.common.identifiers import credit_code_check_char
from services.common.security import Principal, PrincipalType, Role
from services.gateway.schemas import DepartmentCreate, SystemCreate, UserCreate
from services.gateway.service import CLIENT_ID_PREFIX
from services.registry.applications.schemas import ApplicationCreate, Purpose
from services.registry.catalogue.classification import TAXONOMY
from services.registry.catalogue.schemas import ItemSpec, OpenSpec, ResourceCreate, ShareSpec

zh = Faker("zh_CN")

# 行政区划代码 (GB/T 2260) of real districts, with their city, so that a department's credit code,
# region code and name agree.
REGIONS = (
    ("110101", "北京市", "东城区"),
    ("110105", "北京市", "朝阳区"),
    ("310104", "上海市", "徐汇区"),
    ("330106", "杭州市", "西湖区"),
    ("350102", "福州市", "鼓楼区"),
    ("440305", "深圳市", "南山区"),
    ("510107", "成都市", "武侯区"),
)
DEPARTMENT_KINDS = ("公安局", "民政局", "人力资源和社会保障局", "市场监督管理局", "卫生健康委员会", "自然资源局")

# 事项 (government service items) a consuming system may name as its purpose, with a legal basis.
SERVICE_ITEMS = (
    ("ZDSHBZ-SP", "《社会救助暂行办法》第十一条"),  # 最低生活保障审批
    ("TKRY-GYSH", "《社会救助暂行办法》第十九条"),  # 特困人员供养审核
    ("GJJ-TQ", "《住房公积金管理条例》第二十四条"),  # 住房公积金提取
    ("YLBX-DYHD", "《中华人民共和国社会保险法》第十六条"),  # 养老保险待遇核定
)

# 信息项 of a 居民户籍信息-like resource; the identity number is sensitive and masked by default.
HOUSEHOLD_ITEMS = (
    ItemSpec(name="姓名", data_type="C", length=50),
    ItemSpec(name="性别", data_type="C", length=1),
    ItemSpec(name="出生日期", data_type="D", length=8),
    ItemSpec(name="户籍地址", data_type="C", length=200),
    ItemSpec(name="公民身份号码", data_type="C", length=18, sensitive=True, masking="id_card"),
    ItemSpec(name="联系电话", data_type="C", length=11, sensitive=True, masking="mobile"),
)
RESOURCE_NAMES = ("居民户籍信息", "婚姻登记信息", "社会保险参保信息", "不动产登记信息", "残疾人证信息", "死亡登记信息")


def credit_code(region_code: str | None = None) -> str:
    """A valid 统一社会信用代码 of a 机关 (registered by 机构编制) in ``region_code`` (random if None)."""
    region = region_code or zh.random_element(REGIONS)[0]
    first17 = "11" + region + "".join(secrets.choice("0123456789") for _ in range(9))
    return first17 + credit_code_check_char(first17)


def region_of(code: str) -> str:
    """The 行政区划代码 a credit code carries (characters 3–8)."""
    return code[2:8]


def department_name(region_code: str) -> str:
    city, district = next((c, d) for r, c, d in REGIONS if r == region_code)
    return f"{city}{district}{zh.random_element(DEPARTMENT_KINDS)}"


def unconditional_share() -> ShareSpec:
    return ShareSpec(type="unconditional")


def conditional_share() -> ShareSpec:
    return ShareSpec(type="conditional", condition="用于法定职责范围内的政务服务事项办理")


def not_shared(basis: str = "《中华人民共和国个人信息保护法》第二十八条：敏感个人信息") -> ShareSpec:
    return ShareSpec(type="none", basis=basis)


# --------------------------------------------------------------------------- gateway


class DepartmentCreateFactory(ModelFactory[DepartmentCreate]):
    __faker__ = zh
    region_code = Use(lambda: zh.random_element(REGIONS)[0])
    code = PostGenerated(lambda _name, values: credit_code(values["region_code"]))
    name = PostGenerated(lambda _name, values: department_name(values["region_code"]))
    level = "city"
    parent_code = None


class SystemCreateFactory(ModelFactory[SystemCreate]):
    __faker__ = zh
    name = Use(lambda: zh.random_element(("低保审核系统", "公积金业务系统", "社保经办系统", "不动产登记系统")))
    roles: ClassVar[list[str]] = ["consumer"]
    # client_secret_basic unless a test asks for private_key_jwt (and gives its keys).
    auth_method = "client_secret_basic"
    jwks = None
    jwks_uri = None
    tls_client_certificate_bound_access_tokens = False  # RFC 8705 binding only where a test asks


class UserCreateFactory(ModelFactory[UserCreate]):
    __faker__ = zh
    # Romanised names (zhang.wei): usernames are ASCII, and "sys-…" is reserved for systems.
    username = Use(lambda: f"{zh.user_name()}.{secrets.token_hex(2)}")
    password = Use(lambda: f"Tb-{secrets.token_urlsafe(12)}")  # the password policy: 12+ characters, 3 kinds
    department = Require()
    roles: ClassVar[list[str]] = ["data_admin"]


# --------------------------------------------------------------------------- registry


class ResourceCreateFactory(ModelFactory[ResourceCreate]):
    """A 信息资源 shared unconditionally unless ``share=`` says otherwise."""

    __faker__ = zh
    name = Use(lambda: zh.random_element(RESOURCE_NAMES))
    summary = PostGenerated(lambda _name, values: f"{values['name']}：{'、'.join(i.name for i in values['items'])}。")
    category = Use(lambda: zh.random_element(sorted(TAXONOMY.targets)))  # a known 类+项+目
    classification = PostGenerated(lambda _name, values: TAXONOMY.kind_of(values["category"]))
    format = "服务接口"
    items = Use(lambda: list(HOUSEHOLD_ITEMS))
    share = Use(unconditional_share)
    open = Use(OpenSpec)
    update_cycle = "实时"
    related_codes: ClassVar[list[str]] = []
    subject_types: ClassVar[list[str]] = ["id_card"]


class PurposeFactory(ModelFactory[Purpose]):
    __faker__ = zh
    service_item = Use(lambda: zh.random_element(SERVICE_ITEMS)[0])
    basis = PostGenerated(lambda _name, values: dict(SERVICE_ITEMS)[values["service_item"]])


class ApplicationCreateFactory(ModelFactory[ApplicationCreate]):
    """A 共享申请: name the resource, the applying system and the items; purpose is plausible."""

    __faker__ = zh
    resource = Require()
    client_id = Require()
    items = Require()
    purpose = Use(PurposeFactory.build)
    valid_days = 365
    daily_quota = 1000


# --------------------------------------------------------------------------- principals


def system(dept: str, *roles: Role, client_id: str | None = None) -> Principal:
    """A departmental system's principal (roles: consumer unless given), as its token would give."""
    given = roles or (Role.CONSUMER,)
    cid = client_id or CLIENT_ID_PREFIX + secrets.token_hex(8)
    return Principal(
        type=PrincipalType.SYSTEM,
        sub=cid,
        client_id=cid,
        dept=dept,
        roles=frozenset(map(str, given)),
        scope=frozenset(map(str, given)),
        jti=secrets.token_hex(16),
    )


def person(dept: str, *roles: Role, username: str | None = None) -> Principal:
    """A person's principal (数据管理员, 审批人…): no client id, whatever the username looks like."""
    return Principal(
        type=PrincipalType.PERSON,
        sub=username or zh.user_name(),
        client_id=None,
        dept=dept,
        roles=frozenset(map(str, roles)),
        scope=frozenset(map(str, roles)),
        jti=secrets.token_hex(16),
    )
